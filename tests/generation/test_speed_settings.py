"""The speed settings that are run-only (hf batch size, chunk size; llama.cpp threads) leave greedy answers as they
are; the weight type (``--weights``), which changes the arithmetic, is part of a run's fingerprint instead."""

from __future__ import annotations

import json

import pytest

from sdft.config import DistillConfig
from sdft.distillation.distill import distill
from sdft.options import fingerprint, run_only

QUESTIONS = ["What is 3 plus 4?", "Name a colour.", "Write one word about the sea, then stop.",
             "Count to five.", "What is the capital of France?", "Say hi."]


def _rows(tmp_path, name, model, **kw):
    data = tmp_path / "rows.json"
    data.write_text(json.dumps([{"instruction": q, "output": "An answer."} for q in QUESTIONS]))
    out = tmp_path / name
    distill(DistillConfig(**{"data": str(data), "out": str(out), "task": "alpaca", "model": str(model),
                             "backend": "hf", "decoding": "greedy", "max_new_tokens": 12, **kw}),
            progress=False, log=lambda m: None)
    return {r["index"]: r["distilled"] for r in map(json.loads, (out / "rows.jsonl").read_text().splitlines())}


def test_greedy_rows_do_not_depend_on_batch_or_chunk_size(tmp_path, tiny_model_dir):
    one = _rows(tmp_path, "one", tiny_model_dir, batch_size=1, chunk_size=1)
    assert len(one) == len(QUESTIONS)
    for batch, chunk in ((4, 6), (3, 2), (8, 16)):  # length-sorted, left-padded batches of mixed lengths
        assert _rows(tmp_path, f"b{batch}c{chunk}", tiny_model_dir, batch_size=batch, chunk_size=chunk) == one


def test_speed_settings_are_run_only_and_the_weight_type_is_not():
    ro = run_only(DistillConfig)
    assert {"batch_size", "chunk_size", "threads"} <= ro and "weights" not in ro
    base = DistillConfig(data="d", out="o")
    assert fingerprint(base) == fingerprint(DistillConfig(data="d", out="o", batch_size=1, chunk_size=3, threads=1))
    from sdft.generation import make_backend

    with pytest.raises(ValueError, match="is a llamacpp setting"):
        make_backend("hf", None, weights="f16")
    with pytest.raises(ValueError, match="is a hf setting"):
        make_backend("llamacpp", None, weights="bf16")
