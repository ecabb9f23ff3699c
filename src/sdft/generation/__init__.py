"""Generation backends behind one protocol (see :mod:`sdft.generation.base`), chosen by registry lookup."""

from __future__ import annotations

import importlib
from typing import Any

from sdft.generation.base import AUTHORS_SAMPLING, DECODING_PRESETS, GREEDY, Backend, Completion, GenerationParams

# name -> "module:Class"; imported only when chosen (vllm is an optional extra)
BACKENDS: dict[str, str] = {
    "hf": "sdft.generation.hf:HFBackend",
    "llamacpp": "sdft.generation.llamacpp:LlamaCppBackend",
    "openai": "sdft.generation.openai_compat:OpenAICompatBackend",  # any OpenAI-compatible /v1/completions server
    "vllm": "sdft.generation.vllm:VLLMBackend",
}


def backend_class(name: str):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend '{name}'; available: {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise ValueError(f"backend '{name}' is not usable here: {e}") from None


def make_backend(name: str, model: Any, *, executor: str = "local", ray_address: str | None = None,
                 concurrency: int | None = None, **kwargs: Any) -> Backend:
    """Build a backend for a :class:`sdft.models.ResolvedModel`. ``executor="ray"``: the same backend spread over
    a Ray cluster as a Ray Data pipeline (:class:`sdft.generation.ray_data.RayDataBackend`; each actor builds its
    own backend with this function, loading its own tokenizer). ``weights`` other than native: the backend
    :func:`weights_backend` names."""
    w = kwargs.get("weights", "native")
    if w != "native" and name != weights_backend(w):
        raise ValueError(f"--weights {w} is a {weights_backend(w)} setting; backend {name!r} runs the model's "
                         f"own weights (use --backend {weights_backend(w)}, or --weights native)")
    if executor == "ray":
        from functools import partial

        from sdft.generation.ray_data import RayDataBackend

        tokenizer = kwargs.pop("tokenizer", None)
        return RayDataBackend(partial(make_backend, name, model, **kwargs), inner=name, model_dir=str(model.hf_dir),
                              adapter=kwargs.get("adapter"), tokenizer=tokenizer, address=ray_address,
                              concurrency=concurrency, threads=kwargs.get("threads"),
                              trust_remote_code=bool(kwargs.get("trust_remote_code")))
    return backend_class(name).from_model(model, **kwargs)


def weights_backend(weights: str) -> str:
    """The backend a weight type other than ``native`` belongs to: ``bf16`` is torch's (hf), the GGUF copies
    (``q8_0``, ``f16``, ``f32``) llama.cpp's."""
    from sdft.generation.hf import HF_WEIGHT_TYPES

    return "hf" if weights in HF_WEIGHT_TYPES else "llamacpp"


def executor_options(cfg: Any) -> dict[str, Any]:
    """The ``make_backend`` keyword arguments of a config's run-only ``executor``/``ray_address``/``concurrency``
    options (absent ones: local)."""
    opts = {k: getattr(cfg, k, None) for k in ("executor", "ray_address", "concurrency")}
    opts["executor"] = opts["executor"] or "local"
    if opts["executor"] == "ray" and getattr(cfg, "num_candidates", 1) > 1:
        raise ValueError("--executor ray does not do best-of-n (--num-candidates > 1): its retries would wait on "
                         "the running pipeline's workers; use the local executor, or --shard and `sdft merge`")
    return opts


__all__ = ["AUTHORS_SAMPLING", "BACKENDS", "Backend", "Completion", "DECODING_PRESETS", "GREEDY",
           "GenerationParams", "backend_class", "executor_options", "generate_in_chunks", "make_backend",
           "pick_backend", "weights_backend"]


def generate_in_chunks(backend: Backend, prompts: list[str], params: GenerationParams, chunk_size: int,
                       seeds: list[int] | None = None, per_row: bool = False):
    """Yield ``(start, completions, seconds)`` for consecutive chunks of ``prompts`` — the unit at which
    callers write results durably (resume granularity). ``seeds[k]`` seeds the chunk starting at prompt k.

    ``per_row`` (deterministic mode): every prompt is its own ``generate`` call seeded with its own ``seeds[k]``,
    so a sampled answer depends on its row only — not on the chunk size, the batch size, or which rows a resumed
    run had left (a chunk's sampling stream is otherwise shared by its rows)."""
    import time

    if getattr(type(backend), "generate_chunks", None):  # spreads chunks over workers and yields them as they
        yield from backend.generate_chunks(prompts, params, chunk_size, seeds, per_row)  # finish (ray_data)
        return
    for start in range(0, len(prompts), chunk_size):
        t0 = time.perf_counter()
        chunk = prompts[start:start + chunk_size]
        if per_row:
            row_seeds = seeds[start:start + chunk_size] if seeds is not None else range(
                params.seed + start, params.seed + start + len(chunk))
            comps = [c for p, s in zip(chunk, row_seeds) for c in backend.generate([p], params.with_seed(s))]
        else:
            seed = seeds[start] if seeds is not None else params.seed + start
            comps = backend.generate(chunk, params.with_seed(seed))
        yield start, comps, time.perf_counter() - t0


def pick_backend(name: str, model: Any, adapter: str | None = None) -> str:
    """``auto``: vllm on a GPU when installed; else llamacpp for a model with a GGUF, also with an adapter that is a
    GGUF LoRA file or a PEFT LoRA folder that converts to one (:mod:`sdft.generation.gguf_lora`: exact up to the base's
    quantisation); else hf (e.g. a DoRA adapter, or a model without a GGUF)."""
    if name != "auto":
        return name
    import importlib.util

    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        gpu = False
    if gpu and "vllm" in BACKENDS and importlib.util.find_spec("vllm"):
        return "vllm"
    gguf = getattr(model, "gguf", None)
    if gguf and (not adapter or str(adapter).endswith(".gguf") or _converts(adapter, gguf)):
        return "llamacpp"
    return "hf"


def _converts(adapter: str, gguf: Any) -> bool:
    from sdft.generation.gguf_lora import unsupported_reason

    return unsupported_reason(adapter, gguf) is None
