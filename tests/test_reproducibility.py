"""The same config and seed give the same rows and adapter on one machine (issue #15 item 8; the measured facts,
and what is not bit-reproducible, are in docs/reproducibility.md)."""

import json

from sdft.config import DistillConfig, TrainConfig
from sdft.distillation.distill import distill
from sdft.training import train

GSM = [{"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2 * i}\nThe answer is {2 * i}."}
       for i in range(1, 5)]


def _distill(tmp_path, name, model, **kw):
    data = tmp_path / "gsm.json"
    data.write_text(json.dumps(GSM))
    out = tmp_path / name
    det = kw.pop("deterministic", False)
    res = distill(DistillConfig(**{"data": str(data), "out": str(out), "task": "gsm8k", "model": str(model),
                                   "backend": "hf", "decoding": "authors", "max_new_tokens": 8, "batch_size": 4,
                                   "chunk_size": 4, **kw}), progress=False, log=lambda m: None, deterministic=det)
    return out, res


def test_a_rerun_gives_identical_rows_and_adapter(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    a, _ = _distill(tmp_path, "a", tiny_model_dir)  # sampling (the authors' decoding), seeded
    b, _ = _distill(tmp_path, "b", tiny_model_dir)
    assert (a / "rows.jsonl").read_bytes() == (b / "rows.jsonl").read_bytes()
    adapters = []
    for d in (a, a):
        out = tmp_path / f"t{len(adapters)}"
        train(TrainConfig(data=str(d), out=str(out), model=str(tiny_model_dir), max_steps=2, save_steps=50,
                          per_device_batch_size=2, gradient_accumulation_steps=1, learning_rate=5e-3),
              log=lambda m: None)
        adapters.append(load_file(str(out / "adapter_model.safetensors")))
    assert adapters[0].keys() == adapters[1].keys()
    assert all(adapters[0][k].equal(adapters[1][k]) for k in adapters[0])


def test_deterministic_sampling_does_not_depend_on_chunk_or_batch_size(tmp_path, tiny_model_dir):
    """Without it a chunk shares one sampling stream, so chunk_size/batch_size (run-only settings) and a resume
    change sampled rows; with it every row is seeded by its own index."""
    a, res = _distill(tmp_path, "a", tiny_model_dir, deterministic=True)
    b, _ = _distill(tmp_path, "b", tiny_model_dir, deterministic=True, chunk_size=3, batch_size=2)
    rows = lambda d: {r["index"]: r["distilled"] for r in map(json.loads, (d / "rows.jsonl").read_text().splitlines())}  # noqa: E731
    assert rows(a) == rows(b)
    assert res.manifest["deterministic"] is True
    c, _ = _distill(tmp_path, "c", tiny_model_dir, deterministic=True, limit=2)  # a run cut short, then resumed
    _distill(tmp_path, "c", tiny_model_dir, deterministic=True)
    assert rows(c) == rows(a)


def test_deterministic_llamacpp_uses_one_slot_and_repeats_itself():
    import pytest

    from server_helpers import smollm2_model

    pytest.importorskip("xllamacpp")
    from sdft.generation import GREEDY
    from sdft.generation.llamacpp import LlamaCppBackend

    m = smollm2_model()
    be = LlamaCppBackend(m.gguf, deterministic=True, threads=1, n_ctx=1024)
    try:
        assert be.parallel == 1
        prompts = [f"<|im_start|>user\nCount to {i}.<|im_end|>\n<|im_start|>assistant\n" for i in (3, 5, 7)]
        params = GREEDY.__class__(max_new_tokens=12)
        assert [c.text for c in be.generate(prompts, params)] == [c.text for c in be.generate(prompts, params)]
    finally:
        be.close()
