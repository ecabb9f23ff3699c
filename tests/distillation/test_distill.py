"""The distillation pipeline: decisions, records, exports, manifest, resume and refusal to mix configs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend_helpers import Scripted

from sdft.config import DistillConfig

from sdft.options import ConfigError, load
from sdft.distillation.distill import RunConflict, decide, distill
from sdft.distillation.checks import banned_phrases, gsm8k_answer, strip_chatter

GSM = [
    {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3+4 = 7\nThe answer is 7."},
    {"question": "Ann has 10 pens and gives away 2. How many?", "answer": "10-2 = 8\n#### 8"},
    {"question": "What is 6 times 7?", "answer": "6*7=42\nThe answer is 42."},
    {"question": "What is 5 plus 5?", "answer": "5+5=10\nThe answer is 10."},
]


def gsm_file(tmp_path):
    p = tmp_path / "gsm.json"
    p.write_text(json.dumps(GSM))
    return p


def test_decide_is_pure_and_follows_the_release():
    checks = [banned_phrases, gsm8k_answer]
    assert decide("  so 7 apples ", "The answer is 7.", "stop", checks) == ("so 7 apples", True, "accepted")
    assert decide("so 9", " The answer is 7. ", "stop", checks).output == "The answer is 7."
    assert decide("so 7", "The answer is 7.", "length", checks, truncated="reject").reason == "truncated"
    assert decide("As the reference answer says, 7", "The answer is 7.", "stop", checks).reason == "banned_phrase"
    assert decide("   ", "x 7", "stop", [banned_phrases]).reason == "empty"
    assert decide("   ", "x 7", "stop", [banned_phrases], allow_empty=True).accepted
    d = decide("### Response:\nSure! Here is the answer:\n7 apples", "7", "stop", checks, strip_chatter)
    assert d.output == "7 apples" and d.accepted


def test_distill_records_exports_and_manifest(tmp_path, tokenizer):
    replies = [("3 plus 4 makes 7 apples.", "stop"), ("She has 9 left.", "stop"),
               ("The reference answer is 42.", "stop"), ("5+5=10 and then", "length")]
    be = Scripted(replies)
    cfg = DistillConfig(data=str(gsm_file(tmp_path)), out=str(tmp_path / "run"), task="gsm8k", model="unused",
                        truncated="reject")
    res = distill(cfg, backend=be, tokenizer=tokenizer, progress=False)
    rows = [json.loads(l) for l in (tmp_path / "run" / "rows.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rows] == ["accepted", "answer_mismatch", "banned_phrase", "truncated"]
    for r in rows:
        assert set(r) >= {"instruction", "input", "output", "original", "distilled", "accepted", "reason",
                          "finish_reason"}
    assert rows[0]["output"] == "3 plus 4 makes 7 apples." and rows[0]["distilled"] == replies[0][0]
    assert rows[1]["output"] == "10-2 = 8\nThe answer is 8."  # "#### 8" normalised like the authors' file
    # the pre-fill is in the prompt, not in the stored rewrite
    assert be.prompts[0].endswith("<|im_start|>assistant\nGreat! Let's think step by step. ")
    assert "Great!" not in rows[0]["output"]
    assert res.summary["accepted"] == 1 and res.summary["by_reason"]["truncated"] == 1
    distilled = json.loads((tmp_path / "run" / "distilled.json").read_text())
    original = json.loads((tmp_path / "run" / "original.json").read_text())
    assert distilled[0]["output"] == rows[0]["output"] and original[0]["output"] == GSM[0]["answer"]
    info = json.loads((tmp_path / "run" / "dataset_info.json").read_text())
    assert info["sdft"]["file_name"] == "distilled.json"
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["status"] == "complete" and m["input"]["sha256"] and m["counts"]["rows"] == 4
    assert m["decoding"]["temperature"] == 0.95 and m["decoding"]["top_p"] == 0.7 and m["decoding"]["top_k"] == 50


def test_resume_skips_done_rows_and_limit_can_grow(tmp_path, tokenizer):
    data = gsm_file(tmp_path)
    be = Scripted([("7", "stop")] * 10)
    distill(DistillConfig(data=str(data), out=str(tmp_path / "r"), task="gsm8k", limit=2), backend=be,
            tokenizer=tokenizer, progress=False)
    assert len(be.prompts) == 2
    distill(DistillConfig(data=str(data), out=str(tmp_path / "r"), task="gsm8k"), backend=be, tokenizer=tokenizer,
            progress=False)
    assert len(be.prompts) == 4  # only the two missing rows were generated
    idx = [json.loads(l)["index"] for l in (tmp_path / "r" / "rows.jsonl").read_text().splitlines()]
    assert sorted(idx) == [0, 1, 2, 3]


def test_different_config_refuses_unless_overwrite(tmp_path, tokenizer):
    data = gsm_file(tmp_path)
    distill(DistillConfig(data=str(data), out=str(tmp_path / "r"), task="gsm8k", limit=1),
            backend=Scripted([("7", "stop")] * 9), tokenizer=tokenizer, progress=False)
    with pytest.raises(RunConflict, match="template"):
        distill(DistillConfig(data=str(data), out=str(tmp_path / "r"), task="gsm8k", template="refer"),
                backend=Scripted([("7", "stop")] * 9), tokenizer=tokenizer, progress=False)
    res = distill(DistillConfig(data=str(data), out=str(tmp_path / "r"), task="gsm8k", template="refer",
                                overwrite=True, limit=1),
                  backend=Scripted([("7", "stop")] * 9), tokenizer=tokenizer, progress=False)
    assert res.summary["rows"] == 1


def test_config_unknown_key_is_an_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: x\nout: y\nbatchsize: 3\n")
    with pytest.raises(ConfigError, match="unknown key.*batchsize"):
        load(DistillConfig, p)
    p.write_text("data: x\nout: y\nmax_new_tokens: lots\n")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        load(DistillConfig, p)


def test_tiny_model_hf_backend_end_to_end(tmp_path, tiny_model_dir):
    """The real HF backend on a random tiny model: its rewrites are noise, so rows are rejected, but every
    path (model resolution, chat rendering, batching, finish reasons, export) runs."""
    cfg = DistillConfig(data=str(gsm_file(tmp_path)), out=str(tmp_path / "t"), task="gsm8k",
                        model=str(tiny_model_dir), max_new_tokens=6, batch_size=3, decoding="greedy")
    res = distill(cfg, progress=False, log=lambda m: None)
    assert res.summary["rows"] == 4
    rows = [json.loads(l) for l in (tmp_path / "t" / "rows.jsonl").read_text().splitlines()]
    assert all(r["finish_reason"] in {"stop", "length"} for r in rows)
    assert all(r["completion_tokens"] <= 6 for r in rows)
    assert {r["reason"] for r in rows} <= {"truncated", "answer_mismatch", "empty", "accepted", "banned_phrase"}


def _cli(*args):
    return [sys.executable, "-m", "sdft", *args]


def test_cli_errors_are_clear(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(_cli("distill", "--data", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")),
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "missing.json" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "a"}]')
    r = subprocess.run(_cli("distill", "--data", str(bad), "--out", str(tmp_path / "o")), capture_output=True,
                       text=True, env=env)
    assert r.returncode == 2 and "row 0: field 'output': missing" in r.stderr


def test_killed_subprocess_resumes_with_every_row_once(tmp_path, tiny_model_dir):
    rows = [{"instruction": f"Say the number {i}.", "output": f"The number is {i}."} for i in range(40)]
    data = tmp_path / "d.json"
    data.write_text(json.dumps(rows))
    out = tmp_path / "run"
    args = _cli("distill", "--data", str(data), "--out", str(out), "--model", str(tiny_model_dir),
                "--max-new-tokens", "4", "--chunk-size", "1", "--batch-size", "1", "--no-progress")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows_file = out / "rows.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if rows_file.exists() and rows_file.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = rows_file.read_text().count("\n")
    assert 3 <= n_before < 40, "the kill should land mid-run"
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    idx = [json.loads(l)["index"] for l in rows_file.read_text().splitlines()]
    assert sorted(idx) == list(range(40))  # every row exactly once
    assert len(json.loads((out / "distilled.json").read_text())) == 40


def test_shards_cover_every_row_once_and_merge(tmp_path, tokenizer):
    from sdft.distillation.merge import merge_shards

    data = gsm_file(tmp_path)
    outs = []
    for i in range(3):
        out = tmp_path / f"s{i}"
        distill(DistillConfig(data=str(data), out=str(out), task="gsm8k", shard=f"{i}/3"),
                backend=Scripted([("so 7", "stop")] * 9), tokenizer=tokenizer, progress=False)
        outs.append(out)
    res = merge_shards(outs, tmp_path / "merged")
    idx = [json.loads(l)["index"] for l in (tmp_path / "merged" / "rows.jsonl").read_text().splitlines()]
    assert idx == [0, 1, 2, 3] and res.summary["rows"] == 4
    assert len(json.loads((tmp_path / "merged" / "distilled.json").read_text())) == 4
    with pytest.raises(ValueError, match="overlapping"):
        merge_shards([outs[0], outs[0]], tmp_path / "bad")
    other = tmp_path / "other"
    distill(DistillConfig(data=str(data), out=str(other), task="gsm8k", shard="1/3", template="refer"),
            backend=Scripted([("so 7", "stop")] * 9), tokenizer=tokenizer, progress=False)
    with pytest.raises(ValueError, match="different config"):
        merge_shards([outs[0], other], tmp_path / "bad2")


def test_best_of_n_keeps_the_first_passing_candidate(tmp_path, tokenizer):
    data = gsm_file(tmp_path)  # golds: 7, 8, 42, 10
    replies = [("wrong 1", "stop"), ("so 8", "stop"), ("wrong 3", "stop"), ("wrong 4", "stop"),  # first pass
               ("so 7", "stop"), ("no", "stop"), ("no", "stop"),  # rows 0, 2, 3 again
               ("no", "stop"), ("so 10", "stop")]  # rows 2, 3 again
    be = Scripted(replies)
    res = distill(DistillConfig(data=str(data), out=str(tmp_path / "b"), task="gsm8k", num_candidates=3),
                  backend=be, tokenizer=tokenizer, progress=False)
    rows = {json.loads(l)["index"]: json.loads(l) for l in (tmp_path / "b" / "rows.jsonl").read_text().splitlines()}
    assert [rows[i]["candidate"] for i in range(4)] == [1, 0, 2, 2]
    assert [rows[i]["accepted"] for i in range(4)] == [True, True, False, True]
    assert rows[0]["output"] == "so 7" and len(rows[2]["candidates"]) == 3
    assert res.summary["acceptance_at_k"] == {1: 0.25, 2: 0.5, 3: 0.75}
    assert len(be.prompts) == 9
