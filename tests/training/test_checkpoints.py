"""Crash-safe training folders (issue #15 items 2, 4, 6): resume takes the latest complete checkpoint and sets
half-written ones aside; a folder sdft did not write is never trained into."""

import json
import shutil

import pytest

from sdft.config import TrainConfig
from sdft.training import train
from sdft.training.common import TrainError, checkpoint_problem, latest_checkpoint


@pytest.fixture()
def distilled(tmp_path):
    d = tmp_path / "dist"
    d.mkdir()
    with open(d / "rows.jsonl", "w") as f:
        for i in range(8):
            f.write(json.dumps({"index": i, "instruction": f"q{i}", "input": "", "output": f"rewrite {i}",
                                "original": f"orig {i}", "accepted": True}) + "\n")
    (d / "config.json").write_text(json.dumps({"config": {"task": "alpaca"}}))
    return d


def _cfg(distilled, out, model, **kw):
    return TrainConfig(**{"data": str(distilled), "out": str(out), "model": str(model), "max_steps": 2,
                          "save_steps": 1, "per_device_batch_size": 2, "gradient_accumulation_steps": 1,
                          "learning_rate": 5e-3, **kw})


def test_resume_takes_the_latest_complete_checkpoint(tmp_path, tiny_model_dir, distilled):
    out = tmp_path / "run"
    cfg = _cfg(distilled, out, tiny_model_dir)
    train(cfg, log=lambda m: None)
    ck = out / "checkpoints"
    assert checkpoint_problem(ck / "checkpoint-2") is None
    # a kill during a save: an empty folder, and one the trainer had not finished (no trainer_state.json yet)
    (ck / "checkpoint-999").mkdir()
    shutil.copytree(ck / "checkpoint-2", ck / "checkpoint-998")
    (ck / "checkpoint-998" / "trainer_state.json").unlink()
    assert checkpoint_problem(ck / "checkpoint-999") == "no trainer_state.json"
    assert latest_checkpoint(ck, set_aside=False) == (ck / "checkpoint-2", ["checkpoint-998", "checkpoint-999"])
    logs = []
    res = train(_cfg(distilled, out, tiny_model_dir, max_steps=3, resume=True), log=logs.append)
    m = res.manifest
    assert m["resumed"] and m["resumed_from"] == "checkpoint-2" and m["steps"] == 3
    assert sorted(m["incomplete_checkpoints"]) == ["checkpoint-998", "checkpoint-999"]
    assert sum("incomplete" in line and "moved aside" in line for line in logs) == 2
    names = sorted(p.name for p in ck.iterdir())
    assert "checkpoint-3" in names and "checkpoint-999" not in names and "checkpoint-998" not in names
    assert sum(n.startswith("incomplete-checkpoint-99") for n in names) == 2  # kept for inspection
    state = json.loads((ck / "checkpoint-3" / "trainer_state.json").read_text())
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps == [1, 2, 3]  # continued from step 2, nothing trained twice


def test_no_complete_checkpoint_starts_again(tmp_path, tiny_model_dir, distilled):
    out = tmp_path / "run"
    (out / "checkpoints" / "checkpoint-1").mkdir(parents=True)  # killed during the very first save
    (out / "config.json").write_text(json.dumps(json.loads(json.dumps(_cfg(distilled, out, tiny_model_dir).__dict__))))
    logs = []
    res = train(_cfg(distilled, out, tiny_model_dir, resume=True), log=logs.append)
    assert not res.manifest["resumed"] and res.manifest["steps"] == 2
    assert any("no complete checkpoint" in line for line in logs)


def test_a_folder_sdft_did_not_write_is_refused(tmp_path, tiny_model_dir, distilled):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes\n")
    for overwrite in (False, True):
        with pytest.raises(TrainError, match="README.md"):
            train(_cfg(distilled, mine, tiny_model_dir, overwrite=overwrite), log=lambda m: None)
    assert sorted(p.name for p in mine.iterdir()) == ["README.md"]
    model_folder = tiny_model_dir  # e.g. --out pointing at a model folder: its config.json is not ours
    with pytest.raises(TrainError, match="not written by `sdft train`"):
        train(_cfg(distilled, model_folder, tiny_model_dir, overwrite=True), log=lambda m: None)
    assert not (tmp_path / "never").exists()
    with pytest.raises(Exception):  # a bad model: the folder the run made is gone again
        train(_cfg(distilled, tmp_path / "never", tmp_path / "no-model"), log=lambda m: None)
    assert not (tmp_path / "never").exists()


def test_overwrite_removes_the_replaced_runs_checkpoints(tmp_path):
    from sdft.config import TrainConfig
    from sdft.options import to_dict
    from sdft.training.common import check_out

    cfg = TrainConfig(data="d", out=str(tmp_path), method="vanilla")
    (tmp_path / "config.json").write_text(json.dumps({**to_dict(cfg), "learning_rate": 0.5}))
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    check_out(tmp_path, TrainConfig(data="d", out=str(tmp_path), method="vanilla", overwrite=True))
    assert not (tmp_path / "checkpoints").exists()
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    check_out(tmp_path, TrainConfig(data="d", out=str(tmp_path), method="vanilla", learning_rate=0.5, resume=True))
    assert (tmp_path / "checkpoints" / "checkpoint-2").exists()  # --resume keeps them
