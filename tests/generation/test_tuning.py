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


def test_batch_size_auto_picks_the_most_rows_per_s_and_times_once(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tuning, "measure_batch_sizes", lambda *a, **k: calls.append(a) or {
        "8:dynamic": 1.2, "16:dynamic": 1.7, "24:dynamic": 1.8, "24:static": 2.0})
    (tmp_path / "config.json").write_text("{}")
    cfg = SimpleNamespace(weights="bf16", threads=2, max_new_tokens=128, cache_dir=str(tmp_path / "c"), chunk_size=16,
                          trust_remote_code=False, executor="local", batch_size="auto", kv_cache="auto")
    model = SimpleNamespace(hf_dir=tmp_path)
    quiet = {"log": lambda m: None}
    assert tuning.resolve_batch_size(cfg, "hf", model, ["p"] * 60, **quiet) == (24, 48, "static")
    assert tuning.resolve_batch_size(cfg, "hf", model, ["p"] * 60, **quiet) == (24, 48, "static")
    assert len(calls) == 1 and len(calls[0][1]) == tuning.BATCH_SAMPLE  # the first BATCH_SAMPLE prompts, once
    assert calls[0][5:7] == (tuning.BATCH_CANDIDATES, tuning.KV_CACHES)

    def with_(**kw):
        return SimpleNamespace(**{**vars(cfg), **kw})

    # a wider chunk the user asked for is kept; a fixed batch keeps its chunk; nothing to choose: nothing timed
    assert tuning.resolve_batch_size(with_(chunk_size=64), "hf", model, ["p"] * 60, **quiet) == (24, 64, "static")
    assert tuning.resolve_batch_size(with_(batch_size=12, kv_cache="static"), "hf", model, ["p"], **quiet) \
        == (12, 16, "static")
    assert len(calls) == 1
    # another backend or executor: 8, the run's chunk, the dynamic cache
    assert tuning.resolve_batch_size(cfg, "llamacpp", model, ["p"], **quiet) == (8, 16, "dynamic")
    assert tuning.resolve_batch_size(with_(executor="ray"), "hf", model, ["p"], **quiet) == (8, 16, "dynamic")


def test_batch_and_cache_timing_on_the_tiny_model(tiny_model_dir):
    rates = tuning.measure_batch_sizes(tiny_model_dir, ["Hello there", "How are you today?", "Hi"], "native", 1, 3,
                                       batches=(1, 2), caches=tuning.KV_CACHES, log=lambda m: None)
    best = max((1, 2), key=lambda b: rates[f"{b}:dynamic"])
    assert set(rates) == {"1:dynamic", "2:dynamic", f"{best}:static"} and all(r > 0 for r in rates.values())


def test_distill_batch_size_auto_on_the_tiny_model_records_the_size_and_keeps_greedy_rows(tmp_path, tiny_model_dir):
    from sdft.config import DistillConfig
    from sdft.distillation.distill import distill
    from sdft.options import build

    data = tmp_path / "rows.json"
    data.write_text(json.dumps([{"instruction": f"Say {w}.", "output": "Hi."} for w in ("hi", "yes", "a long word")]))

    def run(name, **kw):
        res = distill(DistillConfig(data=str(data), out=str(tmp_path / name), model=str(tiny_model_dir),
                                    backend="hf", decoding="greedy", max_new_tokens=4, cache_dir=str(tmp_path / "c"),
                                    **kw), progress=False, log=lambda m: None)
        rows = [json.loads(x)["distilled"] for x in (res.out / "rows.jsonl").read_text().splitlines()]
        return json.loads((res.out / "config.json").read_text()), rows

    auto_cfg, auto_rows = run("auto", batch_size="auto", kv_cache="auto")
    assert auto_cfg["config"]["batch_size"] in tuning.BATCH_CANDIDATES
    assert auto_cfg["config"]["kv_cache"] in tuning.KV_CACHES
    assert auto_cfg["config"]["chunk_size"] == max(16, 2 * auto_cfg["config"]["batch_size"])
    assert list((tmp_path / "c" / "tuning").glob("*-batch-*.json"))
    for name, kw in (("fixed", {}), ("static", {"kv_cache": "static", "batch_size": 2})):
        cfg, rows = run(name, **kw)  # float32: batch size and KV cache are run-only and leave greedy rows as they are
        assert rows == auto_rows and cfg["fingerprint"] == auto_cfg["fingerprint"]
    # the option takes a number or its word, from YAML or the command line (a string), and nothing else
    assert build(DistillConfig, {"data": "d", "out": "o", "batch_size": "16"}).batch_size == 16
    assert build(DistillConfig, {"data": "d", "out": "o", "batch_size": "auto"}).batch_size == "auto"
    from sdft.options import ConfigError

    for key, bad in (("batch_size", "fast"), ("batch_size", 0), ("kv_cache", "paged")):
        with pytest.raises(ConfigError, match=key):
            build(DistillConfig, {"data": "d", "out": "o", key: bad})


def test_the_kv_cache_names_are_the_hf_backends_own():
    from dataclasses import fields

    from sdft.config import DistillConfig
    from sdft.generation.hf import HF_KV_CACHES
    from sdft.options import meta

    assert tuning.KV_CACHES == HF_KV_CACHES
    assert meta(next(f for f in fields(DistillConfig) if f.name == "kv_cache"))["choices"] == HF_KV_CACHES + ("auto",)
