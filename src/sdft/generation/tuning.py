"""``--weights auto``: the llama.cpp weight type that is fastest on *this* machine for *this* workload, measured.

For each weight type (:mod:`sdft.generation.gguf_weights`) a short calibration runs on the run's own first prompts:
one pass with a single new token (prompt processing, tokens/s) and one with ``DECODE_TOKENS`` new tokens on every
slot (decoding, tokens/s). The predicted time of a row is ``prompt_tokens / prompt_rate + new_tokens / decode_rate``
with the run's mean prompt length and ``max_new_tokens``; the type with the shortest predicted time wins. The
measurement is kept in ``<cache>/tuning/<key>.json`` (key: the GGUF, the CPU model, the thread count and the
llama.cpp build), so a machine calibrates once per model; the chosen type is what the run records in its
fingerprint and manifest (a resume elsewhere that would pick another type is refused, as any config change).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Callable, Sequence

DECODE_TOKENS = 32
SAMPLE = 8  # prompts per calibration pass (one per slot)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def tuning_path(gguf: Path, threads: int, cache_dir: str | Path | None = None) -> Path:
    from importlib.metadata import version

    from sdft.models import cache_root, file_key

    key = hashlib.sha256(f"{file_key(gguf)}:{_cpu_name()}:{threads}:{version('xllamacpp')}".encode()).hexdigest()
    return cache_root(cache_dir) / "tuning" / f"{gguf.stem}-{key[:16]}.json"


def measure(gguf: Path, prompts: Sequence[str], threads: int, parallel: int, cache_dir: str | Path | None = None,
            types: Sequence[str] | None = None, log: Callable[[str], None] = print) -> dict[str, dict]:
    """Prompt-processing and decoding tokens/s of each weight type on ``prompts`` (the first ``SAMPLE``)."""
    from sdft.generation.base import GenerationParams
    from sdft.generation.gguf_weights import WEIGHT_TYPES, weights_gguf
    from sdft.generation.llamacpp import LlamaCppBackend

    sample = list(prompts[:SAMPLE])
    out: dict[str, dict] = {}
    for wtype in types or WEIGHT_TYPES:
        backend = LlamaCppBackend(weights_gguf(gguf, wtype, cache_dir, log), parallel=parallel, threads=threads)
        try:
            backend.generate(sample[:1], GenerationParams(max_new_tokens=2))  # warm-up
            t0 = time.perf_counter()
            one = backend.generate(sample, GenerationParams(max_new_tokens=1))
            t_prompt = time.perf_counter() - t0
            t0 = time.perf_counter()
            full = backend.generate(sample, GenerationParams(max_new_tokens=DECODE_TOKENS))
            t_full = time.perf_counter() - t0
        finally:
            backend.close()
        n_prompt = sum(c.prompt_tokens for c in one)
        n_new = sum(c.completion_tokens for c in full) - sum(c.completion_tokens for c in one)
        out[wtype] = {"prompt_tokens_per_s": n_prompt / t_prompt,
                      "decode_tokens_per_s": max(n_new, 1) / max(t_full - t_prompt, 1e-3)}
        log(f"weights {wtype}: prompt {out[wtype]['prompt_tokens_per_s']:.0f} tok/s, "
            f"decode {out[wtype]['decode_tokens_per_s']:.0f} tok/s")
    return out


def predicted_seconds(rates: dict, prompt_tokens: float, new_tokens: float) -> float:
    return prompt_tokens / rates["prompt_tokens_per_s"] + new_tokens / rates["decode_tokens_per_s"]


def pick_weights(gguf: str | Path, prompts: Sequence[str], tokenize: Callable[[str], list], new_tokens: int,
                 threads: int, parallel: int = 8, cache_dir: str | Path | None = None,
                 log: Callable[[str], None] = print) -> str:
    """The weight type with the shortest predicted time per row for prompts like ``prompts`` and up to
    ``new_tokens`` new tokens, from this machine's stored calibration (measured first when there is none)."""
    gguf = Path(gguf)
    path = tuning_path(gguf, threads, cache_dir)
    if path.is_file():
        rates = json.loads(path.read_text())["rates"]
    else:
        log(f"--weights auto: calibrating llama.cpp weight types on this machine (once; {path})")
        rates = measure(gguf, prompts, threads, parallel, cache_dir, log=log)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"gguf": str(gguf), "cpu": _cpu_name(), "threads": threads, "rates": rates},
                                  indent=2))
        tmp.replace(path)
    sample = list(prompts[:SAMPLE]) or [""]
    mean_prompt = sum(len(tokenize(p)) for p in sample) / len(sample)
    best = min(rates, key=lambda w: predicted_seconds(rates[w], mean_prompt, new_tokens))
    log(f"--weights auto: {best} (predicted {predicted_seconds(rates[best], mean_prompt, new_tokens):.2f} s per "
        f"row of {mean_prompt:.0f} prompt + {new_tokens} new tokens on {threads} threads)")
    return best


def resolve_weights(cfg, backend_name: str | None, model, tokenizer, prompts: Sequence[str], new_tokens: int,
                    log: Callable[[str], None] = print) -> str:
    """What ``weights: auto`` means for a run that generates with ``backend_name`` (None: a backend passed in,
    which runs its own weights): native unless that is llamacpp, else :func:`pick_weights` on its prompts."""
    from sdft.generation.llamacpp import usable_cpus

    if backend_name != "llamacpp" or model is None or getattr(model, "gguf", None) is None:
        log("--weights auto: native (the run does not generate with llama.cpp)")
        return "native"
    return pick_weights(model.gguf, prompts, lambda t: tokenizer(t, add_special_tokens=False)["input_ids"],
                        new_tokens, cfg.threads or usable_cpus(), cache_dir=cfg.cache_dir, log=log)
