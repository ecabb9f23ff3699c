"""``--weights auto`` (sdft.generation.tuning): the type with the shortest predicted time per row wins, the
calibration is stored and reused; llama.cpp measures its GGUF copies, hf float32 against bfloat16, other
backends stay native."""

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


def test_auto_measures_the_backends_own_types_and_is_native_elsewhere(fake_gguf, tmp_path, monkeypatch):
    seen = []
    hf_rates = {"native": {"prompt_tokens_per_s": 600.0, "decode_tokens_per_s": 80.0},
                "bf16": {"prompt_tokens_per_s": 2400.0, "decode_tokens_per_s": 200.0}}
    monkeypatch.setattr(tuning, "measure", lambda *a, **k: seen.append(k["backend"]) or hf_rates)
    cfg = SimpleNamespace(backend="hf", threads=None, cache_dir=str(tmp_path), batch_size=8, executor="local")
    (tmp_path / "config.json").write_text("{}")  # the hf calibration is keyed by the model folder's config
    model = SimpleNamespace(gguf=fake_gguf, hf_dir=fake_gguf.parent)
    tokenizer = lambda t, add_special_tokens=False: {"input_ids": t.split()}  # noqa: E731
    assert tuning.resolve_weights(cfg, "hf", model, tokenizer, ["a b"], 8, log=lambda m: None) == "bf16"
    assert seen == ["hf"]
    assert tuning.resolve_weights(cfg, None, model, None, [], 8, log=lambda m: None) == "native"  # a backend passed in
    assert tuning.resolve_weights(cfg, "openai", model, None, [], 8, log=lambda m: None) == "native"
    assert tuning.resolve_weights(cfg, "llamacpp", SimpleNamespace(gguf=None), None, [], 8, log=lambda m: None) \
        == "native"


def test_distill_records_the_type_auto_chose(tmp_path, tiny_model_dir, monkeypatch):
    from sdft.config import DistillConfig
    from sdft.distillation.distill import distill

    monkeypatch.setattr(tuning, "measure", lambda *a, **k: {  # bf16 measured faster here (the real one is below)
        "native": {"prompt_tokens_per_s": 100.0, "decode_tokens_per_s": 10.0},
        "bf16": {"prompt_tokens_per_s": 400.0, "decode_tokens_per_s": 40.0}})
    data = tmp_path / "rows.json"
    data.write_text(json.dumps([{"instruction": "Say hi.", "output": "Hi."}]))
    res = distill(DistillConfig(data=str(data), out=str(tmp_path / "d"), model=str(tiny_model_dir), backend="hf",
                                decoding="greedy", max_new_tokens=4, weights="auto", cache_dir=str(tmp_path / "c")),
                  progress=False, log=lambda m: None)
    cfg = json.loads((res.out / "config.json").read_text())
    assert cfg["config"]["weights"] == "bf16"
    native = distill(DistillConfig(data=str(data), out=str(tmp_path / "n"), model=str(tiny_model_dir), backend="hf",
                                   decoding="greedy", max_new_tokens=4), progress=False, log=lambda m: None)
    assert json.loads((native.out / "config.json").read_text())["fingerprint"] != cfg["fingerprint"]


def test_hf_calibration_runs_both_types_on_the_tiny_model(tmp_path, tiny_model_dir):
    rates = tuning.measure(tiny_model_dir, ["Hello there, how are you?"] * 2, 1, 1, backend="hf", batch_size=2,
                           log=lambda m: None)
    assert set(rates) == {"native", "bf16"}
    assert all(r["prompt_tokens_per_s"] > 0 and r["decode_tokens_per_s"] > 0 for r in rates.values())


def test_hf_bf16_weights(tiny_model_dir):
    import torch

    from sdft.generation.base import GenerationParams
    from sdft.generation.hf import HFBackend

    b = HFBackend(str(tiny_model_dir), weights="bf16")
    assert next(b.model.parameters()).dtype == torch.bfloat16
    assert len(b.generate(["Hi"], GenerationParams(max_new_tokens=3))) == 1
    with pytest.raises(ValueError, match="hf backend runs native | bf16"):
        HFBackend(str(tiny_model_dir), weights="q8_0")
