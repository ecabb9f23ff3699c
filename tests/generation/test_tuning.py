"""``--weights auto`` (sdft.generation.tuning): the type with the shortest predicted time per row wins, the
calibration is stored and reused, and a run that does not generate with llama.cpp stays native."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from sdft.generation import tuning

RATES = {"native": {"prompt_tokens_per_s": 150.0, "decode_tokens_per_s": 180.0},
         "f32": {"prompt_tokens_per_s": 600.0, "decode_tokens_per_s": 120.0}}


@pytest.fixture()
def fake_gguf(tmp_path):
    p = tmp_path / "m.gguf"
    p.write_bytes(b"GGUF")
    return p


def test_the_prompt_heavy_run_picks_the_fast_prompt_type_and_calibrates_once(fake_gguf, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tuning, "measure", lambda *a, **k: calls.append(a) or RATES)
    tok = lambda t: t.split()  # noqa: E731 - one token per word
    long_prompt = ["w " * 400]
    assert tuning.pick_weights(fake_gguf, long_prompt, tok, 50, 2, cache_dir=tmp_path, log=lambda m: None) == "f32"
    # a decode-heavy run on the same stored calibration: the faster decoder wins; nothing is measured again
    assert tuning.pick_weights(fake_gguf, ["w"], tok, 500, 2, cache_dir=tmp_path, log=lambda m: None) == "native"
    assert len(calls) == 1
    stored = json.loads(tuning.tuning_path(fake_gguf, 2, tmp_path).read_text())
    assert stored["rates"] == RATES and stored["threads"] == 2
    assert tuning.predicted_seconds(RATES["f32"], 600, 120) == pytest.approx(2.0)


def test_auto_is_native_without_llama_cpp(fake_gguf):
    cfg = SimpleNamespace(backend="hf", threads=None, cache_dir=None)
    model = SimpleNamespace(gguf=fake_gguf, hf_dir=fake_gguf.parent)
    assert tuning.resolve_weights(cfg, "hf", model, None, [], 8, log=lambda m: None) == "native"
    assert tuning.resolve_weights(cfg, None, model, None, [], 8, log=lambda m: None) == "native"  # a backend passed in
    assert tuning.resolve_weights(cfg, "llamacpp", SimpleNamespace(gguf=None), None, [], 8, log=lambda m: None) \
        == "native"


def test_distill_records_the_type_auto_chose(tmp_path, tiny_model_dir):
    from sdft.config import DistillConfig
    from sdft.distillation.distill import distill

    data = tmp_path / "rows.json"
    data.write_text(json.dumps([{"instruction": "Say hi.", "output": "Hi."}]))
    res = distill(DistillConfig(data=str(data), out=str(tmp_path / "d"), model=str(tiny_model_dir), backend="hf",
                                decoding="greedy", max_new_tokens=4, weights="auto"), progress=False, log=lambda m: None)
    cfg = json.loads((res.out / "config.json").read_text())
    assert cfg["config"]["weights"] == "native" and "weights" not in cfg["fingerprint"]
