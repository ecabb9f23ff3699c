"""`sdft experiment` fails fast and never gets stuck (issue #15 items 2, 4, 6): every data path, model and task is
checked before any stage runs (also for --dry-run), a failed start leaves no folder, one process per experiment
folder, and a train stage killed during a checkpoint save resumes."""

import json
import subprocess
import sys

import pytest
import yaml

from sdft.options import ConfigError
from sdft.experiment import load_experiment, plan, run_experiment
from sdft.store import RunLocked


def write_cfg(tmp_path, tiny_model_dir, **extra):
    data = tmp_path / "gsm.json"
    data.write_text(json.dumps([{"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2 * i}\nThe answer is "
                                 f"{2 * i}."} for i in range(1, 7)]))
    cfg = {"name": "tiny", "out": str(tmp_path / "exp"), "model": str(tiny_model_dir), "data": str(data),
           "task": "gsm8k", "methods": ["vanilla"], "seeds": [1], "gap": False, "shift_task": None,
           "distill": {"max_new_tokens": 4, "decoding": "greedy", "backend": "hf"},
           "train": {"max_steps": 2, "save_steps": 1, "per_device_batch_size": 2, "gradient_accumulation_steps": 1},
           "eval": {"tasks": ["gsm8k"], "limit": 2, "backend": "hf", "max_new_tokens": 4}, **extra}
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_bad_data_path_fails_before_any_stage_naming_the_entry(tmp_path, tiny_model_dir, dry_run):
    p = write_cfg(tmp_path, tiny_model_dir, datasets=[
        {"name": "plus", "data": str(tmp_path / "gsm.json"), "task": "gsm8k"},
        {"name": "times", "data": str(tmp_path / "missing.json"), "task": "gsm8k"}])
    logs = []
    with pytest.raises(ConfigError, match=r"\[datasets\]\[1\] \(times\): .*missing\.json"):
        run_experiment(load_experiment(p), dry_run=dry_run, progress=False, log=logs.append)
    assert logs == [] and not (tmp_path / "exp").exists()  # nothing ran, nothing was made


@pytest.mark.parametrize("extra, match", [
    ({"model": "no-such-model"}, r"experiment 'tiny': model: --model no-such-model"),
    ({"data": "no_such_dataset"}, r"experiment 'tiny': data: no_such_dataset: no such file"),
    ({"templates": ["nope"]}, r"data: unknown template 'nope'"),
    ({"distill": {"teacher": "/no/teacher.gguf"}}, r"\[distill\] teacher: .*GGUF file not found"),
    ({"eval": {"tasks": ["gsm8k", "nope"]}}, r"\[eval\] \(eval .*\): .*nope"),
    ({"train": {"template": "nope"}}, r"\[train\] \(train vanilla seed=1\): unknown template 'nope'"),
])
def test_every_input_is_checked_up_front(tmp_path, tiny_model_dir, extra, match):
    p = write_cfg(tmp_path, tiny_model_dir, **extra)
    with pytest.raises(ConfigError, match=match):
        run_experiment(load_experiment(p), dry_run=True, progress=False, log=lambda m: None)
    assert not (tmp_path / "exp").exists()


def test_a_second_process_on_the_same_experiment_is_refused(tmp_path, tiny_model_dir):
    cfg = load_experiment(write_cfg(tmp_path, tiny_model_dir))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom sdft.store import run_lock\n"
                               "with run_lock(sys.argv[1], command='sdft experiment exp.yaml'):\n"
                               "    print('held', flush=True); time.sleep(600)", cfg.out],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"pid {holder.pid}.*sdft experiment exp.yaml"):
            run_experiment(cfg, progress=False, log=lambda m: None)
        assert not any(p.name == "experiment.json" for p in (tmp_path / "exp").iterdir())
    finally:
        holder.kill()
        holder.wait()


def test_a_train_stage_killed_during_a_save_resumes(tmp_path, tiny_model_dir):
    cfg = load_experiment(write_cfg(tmp_path, tiny_model_dir))
    run_experiment(cfg, progress=False, log=lambda m: None)
    stages = plan(cfg)
    tr = next(s for s in stages if s.kind == "train")
    ev = next(s for s in stages if s.kind == "eval")
    folder = tr.folder(tmp_path / "exp")
    # as if killed while saving checkpoint 2 (before the final adapter was written): no STAGE.json downstream
    for name in ("STAGE.json", "adapter_model.safetensors", "adapter_config.json", "manifest.json"):
        (folder / name).unlink()
    (ev.folder(tmp_path / "exp") / "STAGE.json").unlink()
    ck = folder / "checkpoints"
    (ck / "checkpoint-2" / "trainer_state.json").unlink()
    (ck / "checkpoint-3").mkdir()
    logs = []
    run_experiment(cfg, progress=False, log=logs.append)
    assert "2 stage(s) ran, 1 cached" in logs[-1]
    m = json.loads((folder / "manifest.json").read_text())
    assert m["resumed"] and m["resumed_from"] == "checkpoint-1" and m["steps"] == 2
    assert sorted(m["incomplete_checkpoints"]) == ["checkpoint-2", "checkpoint-3"]
