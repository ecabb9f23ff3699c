"""The vllm backend: its request mapping everywhere; generation only with a CUDA GPU and vLLM installed (the
shared behaviour is in test_backend_contract.py)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from sdft.generation import BACKENDS, GenerationParams, backend_class, make_backend
from sdft.generation.vllm import VLLMBackend, sampling_kwargs


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_gpu_vllm = pytest.mark.skipif(not (HAS_VLLM and _gpu()),
                                    reason="needs a CUDA GPU and vLLM (pip install -e '.[vllm]')")


def test_registered_and_imported_only_when_chosen():
    assert BACKENDS["vllm"] == "sdft.generation.vllm:VLLMBackend"
    assert backend_class("vllm") is VLLMBackend
    if not HAS_VLLM:
        assert "vllm" not in sys.modules  # the backend module itself imports no vLLM


def test_sampling_kwargs_greedy_and_sampled():
    g = sampling_kwargs(GenerationParams(max_new_tokens=7, stop=("", "###")), seed=3)
    assert (g["temperature"], g["top_p"], g["top_k"], g["max_tokens"], g["seed"]) == (0.0, 1.0, -1, 7, 3)
    assert g["stop"] == ["###"] and g["repetition_penalty"] == 1.0 and g["n"] == 1
    s = sampling_kwargs(GenerationParams(temperature=0.95, top_p=0.7, top_k=50, repetition_penalty=1.2), seed=9)
    assert (s["temperature"], s["top_p"], s["top_k"], s["repetition_penalty"], s["stop"]) == (0.95, 0.7, 50, 1.2, None)
    assert sampling_kwargs(GenerationParams(temperature=1.0, top_k=0), 0)["top_k"] == -1  # 0 = off -> vLLM's -1


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed")
def test_missing_vllm_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"backend 'vllm' is not usable here: .*pip install -e '\.\[vllm\]'"):
        make_backend("vllm", type("M", (), {"hf_dir": tmp_path})())


@needs_gpu_vllm
def test_generates_on_the_gpu_with_per_position_seeds():
    from server_helpers import smollm2_model

    b = VLLMBackend(str(smollm2_model().hf_dir), gpu_memory_utilization=0.3, max_model_len=1024)
    try:
        p = "<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n"
        s = GenerationParams(max_new_tokens=12, temperature=1.0, seed=4)
        a = b.generate([p, p], s)
        assert a == b.generate([p, p], s) and a[0].text != a[1].text
        assert b.generate([p], s.with_seed(5))[0].text == a[1].text
    finally:
        b.close()


def test_settings_from_keyword_then_environment(monkeypatch):
    from sdft.generation.vllm import _setting

    monkeypatch.setenv("SDFT_VLLM_TENSOR_PARALLEL_SIZE", "4")
    assert _setting(None, "TENSOR_PARALLEL_SIZE", int, 1) == 4
    assert _setting(2, "TENSOR_PARALLEL_SIZE", int, 1) == 2
    monkeypatch.delenv("SDFT_VLLM_TENSOR_PARALLEL_SIZE")
    assert _setting(None, "TENSOR_PARALLEL_SIZE", int, 1) == 1
    monkeypatch.setenv("SDFT_VLLM_GPU_MEMORY_UTILIZATION", "lots")
    with pytest.raises(ValueError, match="SDFT_VLLM_GPU_MEMORY_UTILIZATION='lots' is not a valid value"):
        _setting(None, "GPU_MEMORY_UTILIZATION", float, 0.9)
