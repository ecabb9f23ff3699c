"""The onpolicy baseline (TRL's on-policy self-distillation) on the tiny model: the data mapping, the method
registry, a 2-step run whose adapter `sdft eval` loads, and its place in an experiment."""

import json
from pathlib import Path

import pytest
import yaml

from sdft.config import EvalConfig, TrainConfig
from sdft.training.onpolicy import build_examples, sft_steps, teacher_instruction, train_onpolicy
from sdft.templates import TEMPLATES
from sdft.training import METHODS, train
from sdft.training.common import TrainError, TrainResult, choose_targets, resolve_config, tokenize


def rows(n):
    return [{"index": i, "instruction": f"What is {i} plus {i}?", "input": "",
             "output": f"{i} and {i} make {2 * i}. The answer is {2 * i}.",
             "original": f"{i}+{i}={2 * i}\nThe answer is {2 * i}."} for i in range(n)]


@pytest.fixture()
def distilled(tmp_path):
    d = tmp_path / "dist"
    d.mkdir()
    with open(d / "rows.jsonl", "w") as f:
        for r in rows(8):
            f.write(json.dumps({**r, "accepted": True}) + "\n")
    (d / "config.json").write_text(json.dumps({"config": {"task": "gsm8k"}}))
    return d


@pytest.mark.parametrize("fmt", ["chat", "raw"])
def test_student_prompt_is_the_sft_prompt_and_the_teacher_sees_the_original(tokenizer, fmt):
    template = TEMPLATES["alpaca"]
    pairs, stats = choose_targets(rows(4), "onpolicy", None, None, seed=3)
    assert stats["share_changed"] == 0 and all(t == r["original"] for r, t in pairs)  # demonstrations: originals
    examples, tok = build_examples(pairs, tokenizer, template, fmt, "standard", 1024)
    feats, _ = tokenize(pairs, tokenizer, template, fmt, "standard", 1024)
    for (row, demo), ex, f in zip(pairs, examples, feats):
        sft_prompt = [t for t, m in zip(f["input_ids"], f["completion_mask"]) if not m]
        assert tokenizer(ex["prompt"])["input_ids"] == sft_prompt  # TRL tokenizes with special tokens
        teacher = ex["privileged_context"]
        head, tail = teacher.split(demo)  # the demonstration sits in the user turn, after the question
        assert row["instruction"] in head and "This is an example for a response" in head
        assert "Now answer with a response of your own" in tail
        # same system text and the same ending (assistant header / "### Response:") as the student's prompt
        assert teacher[:40] == ex["prompt"][:40] and teacher[-16:] == ex["prompt"][-16:]
    assert tok["target_tokens"] == sum(sum(f["completion_mask"]) for f in feats)  # what SFT would train on


def test_teacher_instruction_keeps_the_input_before_the_demonstration():
    instr, inp = teacher_instruction(TEMPLATES["alpaca"], "Sum these", "1 2", "3")
    assert inp == "" and instr.startswith("Sum these\n1 2\n\nThis is an example") and "\n3\n\nNow answer" in instr


def test_steps_match_the_sft_arithmetic():
    assert sft_steps(16, 2.0, 2, 4, 1) == 4
    assert sft_steps(10, 1.0, 2, 4, 1) == 2  # 5 batches: one full accumulation and a partial one
    assert sft_steps(2000, 5.0, 2, 4, 1) == 1250


def test_registry_dispatches_and_rejects_unknown_methods(tmp_path, monkeypatch):
    assert {"vanilla", "sdft", "onpolicy"} <= set(METHODS)
    with pytest.raises(TrainError, match=r"'nope'.*vanilla, sdft, onpolicy"):
        train(TrainConfig(data="x", out=str(tmp_path / "o"), method="nope"))
    with pytest.raises(TrainError, match="unknown"):
        resolve_config(TrainConfig(data="x", out="o", method="SDFT"))
    with pytest.raises(TrainError, match="onpolicy-teacher"):
        train_onpolicy(TrainConfig(data="x", out=str(tmp_path / "o"), onpolicy_teacher="oracle"))
    seen = []
    monkeypatch.setattr("sdft.training.onpolicy.run_onpolicy",
                        lambda cfg, log: seen.append(cfg) or TrainResult(Path(cfg.out), {}))
    assert train(TrainConfig(data="x", out="o", method="onpolicy")).out == Path("o") and len(seen) == 1


def test_two_step_run_writes_an_adapter_that_eval_loads(tmp_path, tiny_model_dir, distilled):
    from sdft.evaluation.evaluate import evaluate
    from sdft.evaluation.weights import lora_distance

    out = tmp_path / "run"
    cfg = TrainConfig(data=str(distilled), out=str(out), model=str(tiny_model_dir), method="onpolicy", max_steps=2,
                      per_device_batch_size=2, gradient_accumulation_steps=1, max_completion_length=8,
                      learning_rate=5e-3)
    assert train_onpolicy(cfg, log=lambda m: None) == out
    for name in ("adapter_model.safetensors", "adapter_config.json", "config.json", "loss.csv", "README.md"):
        assert (out / name).exists(), name
    m = json.loads((out / "manifest.json").read_text())
    assert m["method"] == "onpolicy" and m["steps"] == 2 and m["loss_first"] is not None
    assert m["targets"]["rows"] == 8 and m["targets"]["share_changed"] == 0  # the report's training table
    assert 0 < m["tokens"]["generated_tokens"] <= 2 * 2 * 8 and m["tokens"]["target_tokens"] > 0
    assert m["onpolicy"]["max_completion_length"] == 8 and m["onpolicy"]["teacher"] == "base"
    assert json.loads((out / "config.json").read_text())["method"] == "onpolicy"
    assert len((out / "loss.csv").read_text().strip().splitlines()) == 3  # header + 2 steps
    assert (out / "README.md").read_text().startswith("# ONPOLICY fine-tune")
    assert lora_distance(out)["total"] > 0  # the adapter moved
    with pytest.raises(TrainError, match="already holds"):
        train_onpolicy(cfg, log=lambda m: None)
    res = evaluate(EvalConfig(out=str(tmp_path / "ev"), tasks=("gsm8k",), model=str(tiny_model_dir),
                              adapter=str(out), backend="hf", limit=2, max_new_tokens=4), progress=False,
                   log=lambda m: None)
    assert res[0]["n"] == 2


def test_experiment_plan_has_an_onpolicy_arm_and_keeps_the_other_arms(tmp_path, tiny_model_dir):
    from sdft.experiment import load_experiment, plan

    def cfg(methods):
        doc = {"name": "tiny", "out": str(tmp_path / "exp"), "model": str(tiny_model_dir), "data": "x.json",
               "task": "gsm8k", "methods": methods, "seeds": [1], "train": {"max_steps": 2},
               "eval": {"tasks": ["gsm8k", "advbench"], "limit": 2}, "shift_task": "advbench"}
        p = tmp_path / f"{len(methods)}.yaml"
        p.write_text(yaml.safe_dump(doc))
        return load_experiment(p)

    four = plan(cfg(["seed", "vanilla", "sdft", "onpolicy"]))
    assert [s.kind for s in four] == ["eval", "distill", "gap"] + ["train", "eval"] * 3 + ["shift"] * 3
    tr = [s for s in four if s.kind == "train" and s.meta["arm"] == "onpolicy"]
    assert len(tr) == 1 and tr[0].config.method == "onpolicy" and tr[0].config.preset == "paper"
    dist = next(s for s in four if s.kind == "distill")
    assert tr[0].config.data == str(dist.folder(Path(tmp_path / "exp"))) and tr[0].deps == [dist.key]
    ev = [s for s in four if s.kind == "eval" and s.meta.get("arm") == "onpolicy"]
    assert len(ev) == 1 and ev[0].config.adapter == str(tr[0].folder(Path(tmp_path / "exp")))
    assert any(s.kind == "shift" and s.meta["arm"] == "onpolicy" for s in four)
    three = plan(cfg(["seed", "vanilla", "sdft"]))
    assert {s.key for s in three} < {s.key for s in four}  # adding the arm re-runs nothing that is cached


def test_experiment_runs_the_onpolicy_arm_into_the_report(tmp_path, tiny_model_dir):
    from sdft.experiment import load_experiment, run_experiment

    data = tmp_path / "gsm.json"
    data.write_text(json.dumps([{"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2 * i}\nThe answer is "
                                 f"{2 * i}."} for i in range(1, 9)]))
    doc = {"name": "tiny", "out": str(tmp_path / "exp"), "model": str(tiny_model_dir), "data": str(data),
           "task": "gsm8k", "methods": ["seed", "onpolicy"], "seeds": [1], "gap": False,
           "distill": {"max_new_tokens": 4, "decoding": "greedy", "backend": "hf"},
           "train": {"max_steps": 2, "per_device_batch_size": 2, "gradient_accumulation_steps": 1,
                     "max_completion_length": 8},
           "eval": {"tasks": ["advbench"], "limit": 2, "backend": "hf", "max_new_tokens": 4}, "shift_task": "advbench"}
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(doc))
    report = run_experiment(load_experiment(p), progress=False, log=lambda m: None)
    md = (report.parent / "report.md").read_text()
    assert "| onpolicy |" in md and "| train onpolicy seed=1 | 8 |" in md and "| onpolicy | 1 |" in md


def test_run_folders_from_before_the_onpolicy_keys_still_match(tmp_path):
    from sdft.options import to_dict
    from sdft.training.common import check_out

    cfg = resolve_config(TrainConfig(data="d", out=str(tmp_path), method="vanilla"))
    old = {k: v for k, v in to_dict(cfg).items() if k not in {"max_completion_length", "onpolicy_teacher"}}
    (tmp_path / "config.json").write_text(json.dumps(old))
    check_out(tmp_path, cfg)  # keys added later count as their defaults
    with pytest.raises(TrainError, match="onpolicy_teacher"):
        check_out(tmp_path, resolve_config(TrainConfig(data="d", out=str(tmp_path), method="vanilla",
                                                        onpolicy_teacher="ema")))
