"""The weight-type copies of a GGUF (sdft.generation.gguf_weights): the same numbers in another encoding, every
metadata field kept, written once into the cache."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

from sdft.generation.gguf_weights import WEIGHT_TYPES, weights_gguf, weights_path  # noqa: E402


@pytest.fixture()
def small_gguf(tmp_path):
    """A GGUF with a Q4_1 matrix, a Q8_0 matrix, an F32 norm and a few metadata fields (no model: llama.cpp
    never loads it)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "src" / "m.gguf"
    path.parent.mkdir()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(64)
    w.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_1))
    w.add_token_list(["<s>", "a", "b"])
    a = rng.standard_normal((4, 64), dtype=np.float32)
    b = rng.standard_normal((2, 32), dtype=np.float32)
    qa, qb = gguf.quants.quantize(a, Q.Q4_1), gguf.quants.quantize(b, Q.Q8_0)
    w.add_tensor("blk.0.attn_q.weight", qa, raw_shape=qa.shape, raw_dtype=Q.Q4_1)
    w.add_tensor("blk.0.attn_k.weight", qb, raw_shape=qb.shape, raw_dtype=Q.Q8_0)
    w.add_tensor("blk.0.attn_norm.weight", rng.standard_normal(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def values(path):
    r = gguf.GGUFReader(str(path))
    return r, {t.name: (t.tensor_type, gguf.quants.dequantize(t.data, t.tensor_type)) for t in r.tensors}


@pytest.mark.parametrize("wtype", ["f32", "f16", "q8_0"])
def test_copy_holds_the_same_numbers_and_metadata(small_gguf, tmp_path, wtype):
    out = weights_gguf(small_gguf, wtype, cache_dir=tmp_path / "cache", log=lambda m: None)
    assert out == weights_path(small_gguf, wtype, tmp_path / "cache") and out.is_file()
    r0, before = values(small_gguf)
    r1, after = values(out)
    want = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0}[wtype]
    assert after["blk.0.attn_norm.weight"][0] == Q.F32  # vectors stay F32
    assert after["blk.0.attn_q.weight"][0] == want
    assert after["blk.0.attn_k.weight"][0] == (Q.Q8_0 if wtype == "q8_0" else want)
    for name, (_, x) in before.items():
        y = after[name][1]
        assert y.shape == x.shape
        if wtype == "f32" or name.endswith("norm.weight"):
            assert np.array_equal(x, y)
        elif wtype == "f16":
            assert np.array_equal(x.astype(np.float16).astype(np.float32), y)
        elif name == "blk.0.attn_k.weight":  # already Q8_0: copied byte for byte
            assert np.array_equal(x, y)
        else:
            assert np.abs(x - y).max() <= np.abs(x).max() / 127 + 1e-6  # one Q8_0 rounding step
    assert r1.fields["general.name"].contents() == "tiny" and r1.fields["llama.context_length"].contents() == 64
    assert r1.fields["tokenizer.ggml.tokens"].contents() == ["<s>", "a", "b"]
    ft = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[wtype]
    assert r1.fields["general.file_type"].contents() == int(ft)


def test_native_is_the_file_itself_and_copies_are_made_once(small_gguf, tmp_path):
    assert weights_gguf(small_gguf, "native") == small_gguf
    said = []
    first = weights_gguf(small_gguf, "f16", cache_dir=tmp_path, log=said.append)
    mtime = first.stat().st_mtime_ns
    assert weights_gguf(small_gguf, "f16", cache_dir=tmp_path, log=said.append) == first
    assert first.stat().st_mtime_ns == mtime and len(said) == 1
    assert not list(first.parent.glob("*.tmp*"))
    with pytest.raises(ValueError, match="weights 'q4'"):
        weights_gguf(small_gguf, "q4")
    assert set(WEIGHT_TYPES) == {"native", "q8_0", "f16", "f32"}


def test_the_config_offers_exactly_the_backends_weight_types():
    """``--weights`` choices are listed on the config field (config must not import the backends); they must be
    the union of what the llama.cpp and hf backends run, plus ``auto`` where a stage measures it."""
    from dataclasses import fields

    from sdft.config import DistillConfig
    from sdft.generation.hf import HF_WEIGHT_TYPES
    from sdft.options import meta

    choices = meta(next(f for f in fields(DistillConfig) if f.name == "weights"))["choices"]
    assert set(choices) == set(WEIGHT_TYPES) | set(HF_WEIGHT_TYPES) | {"auto"}
    assert len(choices) == len(set(choices))
