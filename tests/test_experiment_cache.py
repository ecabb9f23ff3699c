"""Run-only options never re-run a stage: changing batch sizes, workers, threads, save steps, progress or the
cache folder leaves every stage's key (its cache folder) and every run folder's fingerprint as they were."""

from __future__ import annotations

from test_experiment import write_cfg

from sdft.options import fingerprint
from sdft.experiment import load_experiment, plan


def test_run_only_changes_leave_every_stage_cached(tmp_path, tiny_model_dir):
    base = plan(load_experiment(write_cfg(tmp_path, tiny_model_dir)))
    changed = load_experiment(write_cfg(
        tmp_path, tiny_model_dir, cache_dir=str(tmp_path / "other-cache"),
        distill={"max_new_tokens": 4, "decoding": "greedy", "backend": "hf", "batch_size": 3, "chunk_size": 5,
                 "threads": 1},
        train={"max_steps": 2, "per_device_batch_size": 2, "gradient_accumulation_steps": 1, "save_steps": 7,
               "logging_steps": 3, "cpu_malloc": False, "report_to": "tensorboard"},
        eval={"tasks": ["gsm8k", "advbench"], "limit": 3, "backend": "hf", "max_new_tokens": 4, "batch_size": 2,
              "workers": 2, "threads": 1}))
    again = plan(changed)
    assert [s.key for s in again] == [s.key for s in base]  # 0 stages pending
    for a, b in zip(base, again):
        if a.kind in ("distill", "eval"):
            assert fingerprint(a.config) == fingerprint(b.config), a.label


def test_a_result_changing_option_does_change_keys(tmp_path, tiny_model_dir):
    base = plan(load_experiment(write_cfg(tmp_path, tiny_model_dir)))
    lr = plan(load_experiment(write_cfg(tmp_path, tiny_model_dir, train={
        "max_steps": 2, "per_device_batch_size": 2, "gradient_accumulation_steps": 1, "learning_rate": 1e-3})))
    changed = {a.kind for a, b in zip(base, lr) if a.key != b.key}
    assert changed == {"train", "eval", "shift"}
