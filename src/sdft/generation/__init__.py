"""Generation backends behind one protocol (see :mod:`sdft.generation.base`), chosen by registry lookup."""

from __future__ import annotations

import importlib
from typing import Any

from .base import AUTHORS_SAMPLING, DECODING_PRESETS, GREEDY, Backend, Completion, GenerationParams

# name -> "module:Class"; imported only when chosen (vllm is an optional extra)
BACKENDS: dict[str, str] = {
    "hf": "sdft.generation.hf:HFBackend",
    "llamacpp": "sdft.generation.llamacpp:LlamaCppBackend",
}


def backend_class(name: str):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend '{name}'; available: {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise ValueError(f"backend '{name}' is not usable here: {e}") from None


def make_backend(name: str, model: Any, **kwargs: Any) -> Backend:
    """Build a backend for a :class:`sdft.models.ResolvedModel`."""
    return backend_class(name).from_model(model, **kwargs)


__all__ = ["AUTHORS_SAMPLING", "BACKENDS", "Backend", "Completion", "DECODING_PRESETS", "GREEDY",
           "GenerationParams", "backend_class", "make_backend"]
