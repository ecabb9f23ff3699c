"""Distillation frames (release / train / self), truncated rewrites kept by default, and the one training prompt
that training, gap and the train/self frames share."""

import json

import pytest

from backend_helpers import Scripted

from sdft.config import DistillConfig
from sdft.distillation.distill import decide, distill
from sdft.distillation.checks import banned_phrases
from sdft.prompts import framed_prompt, guidance, training_prompt
from sdft.templates import TEMPLATES, render
from sdft.training.common import tokenize

ROWS = [{"instruction": "Name a colour.", "input": "", "output": "Red. KEEP"},
        {"instruction": "Name a fruit.", "input": "one only", "output": "An apple."},
        {"instruction": "Name a tree.", "input": "", "output": "Oak. KEEP"}]
# SmolLM2's chat template inserts this system turn when a conversation has none (as Qwen's does)
DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"



def data_file(tmp_path):
    p = tmp_path / "rows.json"
    p.write_text(json.dumps(ROWS))
    return p


def test_train_frame_keeps_the_training_chat_frame_and_default_system_prompt(tmp_path, tokenizer):
    be = Scripted([("Blue.", "stop")])
    res = distill(DistillConfig(data=str(data_file(tmp_path)), out=str(tmp_path / "d"), task="alpaca", frame="train",
                                train_template="plain"), backend=be, tokenizer=tokenizer, progress=False)
    ref = "\n\nReference answer:\n"
    using = "Using the reference answer as a guide, write your own response."
    assert be.prompts[0] == (DEFAULT_SYSTEM + "<|im_start|>user\nName a colour." + ref + "Red. KEEP\n\n" + using
                             + "<|im_end|>\n<|im_start|>assistant\n")
    assert be.prompts[1].startswith(DEFAULT_SYSTEM + "<|im_start|>user\nName a fruit.\none only" + ref + "An apple.")
    # the training prompt of the same row is the same frame without the reference block
    train = training_prompt(ROWS[0], TEMPLATES["plain"], prompt_format="chat", tokenizer=tokenizer)
    assert train == DEFAULT_SYSTEM + "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    assert res.manifest["frame"] == "train" and res.manifest["train_template"] == "plain"
    # the release frame is the distillation template's own system turn (no default system prompt)
    rel = framed_prompt("release", ROWS[0], "Red.", TEMPLATES["plain"], TEMPLATES["using"], prompt_format="chat",
                        tokenizer=tokenizer)
    assert rel == render(TEMPLATES["using"], "Name a colour.", "", "Red.", prompt_format="chat", tokenizer=tokenizer)
    assert "SmolLM" not in rel


def test_guidance_sentences():
    assert guidance(TEMPLATES["refer"]) == "Refer to the reference answer and write your own response."
    assert guidance(TEMPLATES["math-distill"]).startswith("Refer to the reference answer and write a response")
    alpaca = framed_prompt("train", ROWS[0], "Red.", TEMPLATES["alpaca"], TEMPLATES["refer"], prompt_format="raw")
    assert alpaca.endswith("### Instruction:\nName a colour.\n\nReference answer:\nRed.\n\nRefer to the reference "
                           "answer and write your own response.\n\n### Response:\n")
    with pytest.raises(ValueError, match="frame"):
        framed_prompt("nope", ROWS[0], "", TEMPLATES["alpaca"], TEMPLATES["using"], prompt_format="raw")


def test_truncated_rewrites_are_kept_and_counted_by_default(tmp_path, tokenizer):
    checks = [banned_phrases]
    assert decide("half a sent", "orig", "length", checks) == ("half a sent", True, "accepted")
    assert decide("half a sent", "orig", "length", checks, truncated="reject").reason == "truncated"
    be = Scripted([("cut off here", "length"), ("done.", "stop")])
    res = distill(DistillConfig(data=str(data_file(tmp_path)), out=str(tmp_path / "t"), task="alpaca"), backend=be,
                  tokenizer=tokenizer, progress=False)
    rows = [json.loads(l) for l in (tmp_path / "t" / "rows.jsonl").read_text().splitlines()]
    assert [r["finish_reason"] for r in rows] == ["length", "stop", "length"] and all(r["accepted"] for r in rows)
    assert res.summary["truncated"] == 2 and res.summary["truncated_accepted"] == 2
    assert res.manifest["truncated"] == "keep" and res.manifest["frame"] == "release"


def test_old_release_runs_resume_only_with_the_old_truncation_policy(tmp_path, tokenizer):
    from sdft.distillation.distill import fingerprint

    base = dict(data="x", out="y")
    fp = fingerprint(DistillConfig(**base, truncated="reject"), "sha")
    assert "frame" not in fp and "train_template" not in fp and "truncated" not in fp  # as before these options
    assert fingerprint(DistillConfig(**base), "sha")["truncated"] == "keep"


def test_self_frame_keeps_the_seeds_answer_where_the_check_passes(tmp_path, tiny_model_dir, tokenizer, monkeypatch):
    """On the tiny model: the prompt sampled from is exactly the training prompt (no reference shown); the target is
    the seed's answer where the check passes and the original where it fails."""
    from sdft.generation import GREEDY
    from sdft.generation.hf import HFBackend

    (tmp_path / "marks.py").write_text("def keep_marked(text, original):\n"
                                       "    return None if 'KEEP' in original else 'not_marked'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = DistillConfig(data=str(data_file(tmp_path)), out=str(tmp_path / "s"), task="alpaca", frame="self",
                        train_template="plain", model=str(tiny_model_dir), backend="hf", decoding="greedy",
                        max_new_tokens=5, checks=("marks:keep_marked",), allow_empty=True)
    res = distill(cfg, progress=False, log=lambda m: None)
    rows = sorted((json.loads(l) for l in (tmp_path / "s" / "rows.jsonl").read_text().splitlines()),
                  key=lambda r: r["index"])
    prompts = [training_prompt(r, TEMPLATES["plain"], prompt_format="chat", tokenizer=tokenizer) for r in ROWS]
    assert res.manifest["example_prompt"] == prompts[0] and res.manifest["frame"] == "self"
    own = HFBackend(str(tiny_model_dir), batch_size=1).generate(prompts, GREEDY.__class__(max_new_tokens=5))
    assert [r["distilled"] for r in rows] == [c.text for c in own]  # the seed's own greedy answers
    assert [r["accepted"] for r in rows] == [True, False, True]
    assert rows[0]["output"] == own[0].text.strip() and rows[2]["output"] == own[2].text.strip()
    assert rows[1]["output"] == "An apple." and rows[1]["reason"] == "not_marked"
    # ... and the trainer's prompt tokens for these rows are the tokens of the prompts they were sampled from
    feats, _ = tokenize([(r, r["output"]) for r in rows], tokenizer, TEMPLATES["plain"], "chat", "standard", 1024)
    for f, p in zip(feats, prompts):
        n = f["completion_mask"].index(1)
        assert f["input_ids"][:n] == tokenizer(p, add_special_tokens=False)["input_ids"]


def test_training_defaults_to_the_template_a_train_frame_was_sampled_for(tmp_path, tokenizer, tiny_model_dir):
    from sdft.config import TrainConfig
    from sdft.training.common import prepare_run

    out = tmp_path / "d"
    distill(DistillConfig(data=str(data_file(tmp_path)), out=str(out), task="alpaca", frame="train",
                          train_template="plain"), backend=Scripted([("Blue.", "stop")]), tokenizer=tokenizer,
            progress=False)
    run = prepare_run(TrainConfig(data=str(out), out=str(tmp_path / "t"), model=str(tiny_model_dir)), log=lambda m: 0)
    assert run.template.name == "plain"
    run = prepare_run(TrainConfig(data=str(out), out=str(tmp_path / "t"), model=str(tiny_model_dir),
                                  template="alpaca"), log=lambda m: 0)
    assert run.template.name == "alpaca"  # an explicit template wins
