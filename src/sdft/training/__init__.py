"""``sdft train``: the training methods, one registry.

``vanilla`` and ``sdft`` are supervised fine-tuning (:mod:`sdft.training.sft`, TRL's ``SFTTrainer`` with PEFT) on the
original responses or on the seed model's checked rewrites; ``onpolicy`` is TRL's on-policy self-distillation
(:mod:`sdft.training.onpolicy`, a baseline from another paper). What they share is :mod:`sdft.training.common`.
A method's module is imported only when it runs (on-policy needs TRL's experimental trainer).
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

from sdft.config import TrainConfig
from sdft.store import atomic_write_json, run_lock
from sdft.training.common import TrainError, TrainResult

# method -> (module, function); a later method is one more row
METHODS: dict[str, tuple[str, str]] = {
    "vanilla": ("sdft.training.sft", "train_sft"),  # SFT on the original responses
    "sdft": ("sdft.training.sft", "train_sft"),  # SFT on the seed model's checked rewrites (Yang et al.)
    "onpolicy": ("sdft.training.onpolicy", "run_onpolicy"),  # TRL's on-policy self-distillation (Shenfeld et al.)
}

Trainer = Callable[[TrainConfig, Callable[[str], None]], TrainResult]


def trainer_for(method: str) -> Trainer:
    try:
        module, name = METHODS[method]
    except KeyError:
        raise TrainError(f"--method '{method}': unknown; use one of {', '.join(METHODS)}") from None
    return getattr(importlib.import_module(module), name)


def train(cfg: TrainConfig, log: Callable[[str], None] = print, deterministic: bool | None = None) -> TrainResult:
    """``sdft train``: the trainer registered for ``cfg.method`` (see ``METHODS``), holding the output folder's
    lock (:func:`sdft.store.run_lock`; in a distributed run the main process holds it for all) for the whole run.
    ``deterministic`` (default: the config's ``deterministic``, else off): torch's deterministic algorithms
    (matters on GPUs; see docs/reproducibility.md), recorded in the manifest."""
    trainer = trainer_for(cfg.method)  # an unknown method fails before the output folder exists
    if deterministic is None:
        deterministic = bool(getattr(cfg, "deterministic", False))
    lock = run_lock(cfg.out) if is_main_process() else nullcontext()
    with lock, (determinism(cfg.seed) if deterministic else nullcontext()):
        result = trainer(cfg, log)
        if cfg.export_gguf and result.manifest:
            export_gguf(result, cfg, log)
    return result


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` launch (or a plain single process): the one that holds the folder lock."""
    import os

    return os.environ.get("RANK", "0") == "0"


@contextmanager
def determinism(seed: int) -> Iterator[None]:
    """transformers' full determinism for one run: seeds, ``torch.use_deterministic_algorithms(True)`` (warning,
    not failing, on an op without a deterministic kernel), cuDNN deterministic and cuBLAS's fixed workspace
    (``CUBLAS_WORKSPACE_CONFIG``, which must be set before CUDA starts: true in a fresh ``sdft train``). torch's
    switches are put back afterwards (an experiment's later stages, a test session)."""
    import torch
    from transformers.trainer_utils import enable_full_determinism

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    enable_full_determinism(seed, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def export_gguf(result: TrainResult, cfg: TrainConfig, log: Callable[[str], None] = print) -> None:
    """``out/adapter.gguf``: the LoRA converted against the base model's GGUF (:mod:`sdft.generation.gguf_lora`),
    the file ``sdft eval --adapter out --backend llamacpp`` loads. A failure is logged and recorded, never fatal:
    the adapter itself is saved and still works with ``--backend hf``."""
    from sdft.generation.gguf_lora import LoraConversionError, convert_lora
    from sdft.models import resolve_model

    base = resolve_model(cfg.model, cfg.cache_dir, log=log).gguf
    try:
        if base is None:
            raise LoraConversionError(f"the base model {cfg.model} has no GGUF file for llama.cpp")
        path = convert_lora(result.out, base)
        result.manifest["gguf_lora"] = {"path": str(path), "base_gguf": str(base)}
        log(f"GGUF LoRA for llama.cpp → {path}")
    except (LoraConversionError, OSError) as e:
        result.manifest["gguf_lora"] = {"error": str(e)}
        log(f"export_gguf skipped: {e}")
    atomic_write_json(result.out / "manifest.json", result.manifest)


__all__ = ["METHODS", "TrainError", "TrainResult", "export_gguf", "train", "trainer_for"]
