"""Training on the tiny model: target choice, label masking, fairness between arms, resume, two processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdft.config import TrainConfig
from sdft.templates import TEMPLATES
from sdft.training import train
from sdft.training.common import TrainError, choose_targets, load_rows, tokenize


def rows(n):
    return [{"index": i, "instruction": f"q{i}", "input": "", "output": f"rewrite {i}" if i % 3 else f"orig {i}",
             "original": f"orig {i}"} for i in range(n)]


def test_mix_ratio_selects_exactly_round_r_n_with_a_seed():
    rs = rows(30)
    pairs, stats = choose_targets(rs, "sdft", 0.5, None, seed=1)
    assert stats["rows_taking_rewrite_slot"] == 15 and len(pairs) == 30
    # rejected rewrites equal the original, so fewer targets actually change; the run records it
    assert stats["targets_changed"] == sum(t.startswith("rewrite") for _, t in pairs) <= 15
    again, _ = choose_targets(rs, "sdft", 0.5, None, seed=1)
    other, _ = choose_targets(rs, "sdft", 0.5, None, seed=2)
    assert again == pairs and other != pairs
    assert choose_targets(rs, "sdft", 0.0, None, 1)[1]["targets_changed"] == 0
    assert choose_targets(rs, "vanilla", None, None, 1)[1]["mix_ratio"] == 0.0


def test_num_samples_are_nested_prefixes():
    rs = rows(50)
    small = [r["index"] for r, _ in choose_targets(rs, "sdft", None, 10, 3)[0]]
    big = [r["index"] for r, _ in choose_targets(rs, "sdft", None, 20, 3)[0]]
    assert big[:10] == small
    with pytest.raises(TrainError):
        choose_targets(rs, "sdft", None, 51, 3)


def test_vanilla_and_sdft_differ_only_in_targets(tokenizer):
    rs = rows(12)
    van, _ = choose_targets(rs, "vanilla", None, None, 7)
    sd, _ = choose_targets(rs, "sdft", None, None, 7)
    assert [r["index"] for r, _ in van] == [r["index"] for r, _ in sd]
    fv, _ = tokenize(van, tokenizer, TEMPLATES["alpaca"], "chat", "standard", 1024)
    fs, _ = tokenize(sd, tokenizer, TEMPLATES["alpaca"], "chat", "standard", 1024)
    for a, b in zip(fv, fs):
        pa = [t for t, m in zip(a["input_ids"], a["completion_mask"]) if not m]
        pb = [t for t, m in zip(b["input_ids"], b["completion_mask"]) if not m]
        assert pa == pb  # identical prompts


def test_labels_mask_prompt_and_padding(tokenizer):
    """Through TRL's own preparation and collator: loss only on response tokens (eos included), padding masked
    by position even though SmolLM2's pad token is its eos token."""
    from datasets import Dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    pairs = [({"instruction": "Say hi", "input": ""}, "hi"), ({"instruction": "Say a longer thing", "input": ""},
                                                              "a much longer answer here")]
    feats, stats = tokenize(pairs, tokenizer, TEMPLATES["alpaca"], "chat", "standard", 1024)
    ds = Dataset.from_list(feats)
    from trl import SFTConfig, SFTTrainer  # noqa: F401 - the preparation below is TRL's
    from trl.trainer.sft_trainer import SFTTrainer as T

    labels = []
    for f in feats:  # TRL folds completion_mask into labels when completion_only_loss=True
        labels.append([t if m else -100 for t, m in zip(f["input_ids"], f["completion_mask"])])
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(
        [{"input_ids": f["input_ids"], "labels": l} for f, l in zip(feats, labels)])
    short = 0 if len(feats[0]["input_ids"]) < len(feats[1]["input_ids"]) else 1
    lab, att = batch["labels"][short], batch["attention_mask"][short]
    assert (lab[att == 0] == -100).all()  # padding (= eos id) never trained
    trained = [t for t in lab.tolist() if t != -100]
    assert tokenizer.decode(trained) == pairs[short][1] + tokenizer.eos_token
    assert stats["target_tokens"] == sum(sum(f["completion_mask"]) for f in feats)
    assert ds.num_rows == 2 and T is not None


def test_sdft_needs_a_distilled_folder(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps([{"instruction": "a", "output": "b"}]))
    with pytest.raises(TrainError, match="vanilla"):
        load_rows(TrainConfig(data=str(p), out=str(tmp_path / "o"), method="sdft"))
    rs, task, _ = load_rows(TrainConfig(data=str(p), out=str(tmp_path / "o"), method="vanilla"))
    assert task == "alpaca" and rs[0]["original"] == "b"


@pytest.fixture()
def distilled(tmp_path):
    d = tmp_path / "dist"
    d.mkdir()
    with open(d / "rows.jsonl", "w") as f:
        for r in rows(16):
            f.write(json.dumps({**r, "accepted": r["output"] != r["original"]}) + "\n")
    (d / "config.json").write_text(json.dumps({"config": {"task": "alpaca"}}))
    return d


def test_train_and_resume_on_tiny_model(tmp_path, tiny_model_dir, distilled):
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(distilled), out=str(out), model=str(tiny_model_dir), max_steps=4, save_steps=2,
                      per_device_batch_size=2, gradient_accumulation_steps=1, learning_rate=5e-3)
    res = train(cfg, log=lambda m: None)
    m = res.manifest
    assert m["steps"] == 4 and m["targets"]["share_changed"] > 0
    assert (out / "adapter_model.safetensors").exists() and (out / "loss.csv").exists()
    assert (out / "README.md").read_text().startswith("# SDFT fine-tune")
    # a finished run is not trained twice by accident
    with pytest.raises(TrainError, match="already holds"):
        train(cfg, log=lambda m: None)
    # resume continues from the last checkpoint: raise max_steps, only the new steps run
    res2 = train(TrainConfig(**{**cfg.__dict__, "max_steps": 6, "resume": True}), log=lambda m: None)
    assert res2.manifest["resumed"] and res2.manifest["steps"] == 6
    state = json.loads(sorted((out / "checkpoints").glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps == sorted(set(steps))  # no step trained twice


def test_two_process_gloo_run(tmp_path, tiny_model_dir, distilled):
    """The distributed path really runs: torchrun, 2 CPU processes, gloo."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "sdft", "train", "--data", str(distilled), "--out", str(out), "--model", str(tiny_model_dir),
           "--max-steps", "2", "--per-device-batch-size", "2", "--gradient-accumulation-steps", "1",
           "--ddp-backend", "gloo"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["steps"] == 2
    assert m["trainer_metrics"].get("train_samples_per_second", 0) > 0 or m["train_runtime_s"] > 0


def test_tune_malloc_only_touches_glibc(monkeypatch):
    """`cpu_malloc`: glibc's thresholds are raised through mallopt; any other C library is left alone."""
    import platform

    from sdft.training.common import tune_malloc

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert tune_malloc() is True
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("musl", "1.2"))
    assert tune_malloc() is False
