"""``--weights auto``: the weight type (llama.cpp's GGUF copies, or torch's float32/bfloat16 for the hf backend) that
is fastest on *this* machine for *this* workload, measured.

For each weight type of the run's backend (llama.cpp: :mod:`sdft.generation.gguf_weights`; hf: ``native`` float32
and ``bf16``) a short calibration runs on the run's own first prompts:
one pass with a single new token (prompt processing, tokens/s) and one with ``DECODE_TOKENS`` new tokens on every
slot (decoding, tokens/s). The predicted time of a row is ``prompt_tokens / prompt_rate + new_tokens / decode_rate``
with the run's mean prompt length and ``max_new_tokens``; the type with the shortest predicted time wins. The
measurement is kept in ``<cache>/tuning/<key>.json`` (key: the GGUF or the model folder's config, the CPU model, the
thread count, the llama.cpp or torch build and, for hf, the batch size), so a machine calibrates once per model;
the chosen type is what the run records in its fingerprint and manifest (a resume elsewhere that would pick another
type is refused, as any config change).

``--batch-size auto`` / ``--kv-cache auto`` (hf backend): whole greedy passes over the run's first ``BATCH_SAMPLE``
prompts at each of ``BATCH_CANDIDATES``, then each of ``KV_CACHES`` at the fastest batch size; the most rows/s wins
(:func:`pick_batch_size`; stored as above). Both are run-only: in float32 they leave greedy answers as they are; in
bfloat16 the batch shapes move near-ties (measured in BENCHMARKS.md), as the weight type itself does.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Callable, Sequence

from sdft.store import atomic_write_json

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


def tuning_path(target: Path, threads: int, cache_dir: str | Path | None = None, backend: str = "llamacpp",
                batch_size: int = 8) -> Path:
    """Where the calibration of ``target`` (llamacpp: the GGUF; hf: the model folder) is stored."""
    from importlib.metadata import version

    from sdft.models import cache_root, file_key

    target = Path(target)
    if backend == "hf":
        ident = f"hf:{file_key(target / 'config.json')}:{batch_size}:torch {version('torch')}"
    else:
        ident = f"{file_key(target)}:xllamacpp {version('xllamacpp')}"
    key = hashlib.sha256(f"{ident}:{_cpu_name()}:{threads}".encode()).hexdigest()
    stem = target.name if backend == "hf" else target.stem
    return cache_root(cache_dir) / "tuning" / f"{stem}-{key[:16]}.json"


def _types(backend: str) -> tuple[str, ...]:
    if backend == "hf":
        from sdft.generation.hf import HF_WEIGHT_TYPES

        return HF_WEIGHT_TYPES
    from sdft.generation.gguf_weights import WEIGHT_TYPES

    return WEIGHT_TYPES


def _backend(backend: str, target: Path, wtype: str, threads: int, parallel: int, batch_size: int,
             cache_dir: str | Path | None, log: Callable[[str], None]):
    if backend == "hf":
        from sdft.generation.hf import HFBackend

        return HFBackend(str(target), weights=wtype, threads=threads, batch_size=batch_size)
    from sdft.generation.gguf_weights import weights_gguf
    from sdft.generation.llamacpp import LlamaCppBackend

    return LlamaCppBackend(weights_gguf(target, wtype, cache_dir, log), parallel=parallel, threads=threads)


def measure(target: Path, prompts: Sequence[str], threads: int, parallel: int, cache_dir: str | Path | None = None,
            types: Sequence[str] | None = None, log: Callable[[str], None] = print, backend: str = "llamacpp",
            batch_size: int = 8) -> dict[str, dict]:
    """Prompt-processing and decoding tokens/s of each weight type on ``prompts`` (the first ``SAMPLE``)."""
    from sdft.generation.base import GenerationParams

    sample = list(prompts[:SAMPLE])
    out: dict[str, dict] = {}
    for wtype in types or _types(backend):
        backend_ = _backend(backend, Path(target), wtype, threads, parallel, batch_size, cache_dir, log)
        try:
            backend_.generate(sample[:1], GenerationParams(max_new_tokens=2))  # warm-up
            t0 = time.perf_counter()
            one = backend_.generate(sample, GenerationParams(max_new_tokens=1))
            t_prompt = time.perf_counter() - t0
            t0 = time.perf_counter()
            full = backend_.generate(sample, GenerationParams(max_new_tokens=DECODE_TOKENS))
            t_full = time.perf_counter() - t0
        finally:
            backend_.close()
        n_prompt = sum(c.prompt_tokens for c in one)
        n_new = sum(c.completion_tokens for c in full) - sum(c.completion_tokens for c in one)
        out[wtype] = {"prompt_tokens_per_s": n_prompt / t_prompt,
                      "decode_tokens_per_s": max(n_new, 1) / max(t_full - t_prompt, 1e-3)}
        log(f"weights {wtype}: prompt {out[wtype]['prompt_tokens_per_s']:.0f} tok/s, "
            f"decode {out[wtype]['decode_tokens_per_s']:.0f} tok/s")
    return out


def predicted_seconds(rates: dict, prompt_tokens: float, new_tokens: float) -> float:
    return prompt_tokens / rates["prompt_tokens_per_s"] + new_tokens / rates["decode_tokens_per_s"]


def pick_weights(target: str | Path, prompts: Sequence[str], tokenize: Callable[[str], list], new_tokens: int,
                 threads: int, parallel: int = 8, cache_dir: str | Path | None = None,
                 log: Callable[[str], None] = print, backend: str = "llamacpp", batch_size: int = 8) -> str:
    """The weight type with the shortest predicted time per row for prompts like ``prompts`` and up to
    ``new_tokens`` new tokens, from this machine's stored calibration (measured first when there is none).
    ``target``: the GGUF (llamacpp) or the model folder (hf)."""
    target = Path(target)
    path = tuning_path(target, threads, cache_dir, backend, batch_size)
    if path.is_file():
        rates = json.loads(path.read_text())["rates"]
    else:
        log(f"--weights auto: calibrating {backend} weight types on this machine (once; {path})")
        rates = measure(target, prompts, threads, parallel, cache_dir, log=log, backend=backend,
                        batch_size=batch_size)
        atomic_write_json(path, {"target": str(target), "backend": backend, "cpu": _cpu_name(), "threads": threads,
                                 "rates": rates})
    sample = list(prompts[:SAMPLE]) or [""]
    mean_prompt = sum(len(tokenize(p)) for p in sample) / len(sample)
    best = min(rates, key=lambda w: predicted_seconds(rates[w], mean_prompt, new_tokens))
    log(f"--weights auto: {best} (predicted {predicted_seconds(rates[best], mean_prompt, new_tokens):.2f} s per "
        f"row of {mean_prompt:.0f} prompt + {new_tokens} new tokens on {threads} threads, {backend})")
    return best


def resolve_weights(cfg, backend_name: str | None, model, tokenizer, prompts: Sequence[str], new_tokens: int,
                    log: Callable[[str], None] = print) -> str:
    """What ``weights: auto`` means for a run that generates with ``backend_name`` (None: a backend passed in,
    which runs its own weights): :func:`pick_weights` among that backend's types for llamacpp (a model with a
    GGUF) and hf; native for any other backend."""
    from sdft.generation.llamacpp import usable_cpus

    def tokenize(t):
        return tokenizer(t, add_special_tokens=False)["input_ids"]

    threads = cfg.threads or usable_cpus()
    if model is not None and backend_name == "llamacpp" and getattr(model, "gguf", None) is not None:
        return pick_weights(model.gguf, prompts, tokenize, new_tokens, threads, cache_dir=cfg.cache_dir, log=log)
    if model is not None and backend_name == "hf" and getattr(cfg, "executor", "local") in (None, "local"):
        return pick_weights(model.hf_dir, prompts, tokenize, new_tokens, threads, cache_dir=cfg.cache_dir, log=log,
                            backend="hf", batch_size=cfg.batch_size if isinstance(cfg.batch_size, int) else 8)
    log(f"--weights auto: native (the run generates with {backend_name or 'a given backend'})")
    return "native"


# --batch-size auto / --kv-cache auto (hf backend): whole greedy passes over the run's first prompts, one per
# candidate, each in chunks of twice the batch (as the run will be: rows are length-sorted within a chunk, so a
# wider chunk pads less). Measured on an AMX Xeon (SmolLM2-135M, bf16, 48 GSM8K rows, 128 new tokens): batch 8 / 16
# / 24 ran 1.2 / 1.7 / 2.0 rows/s, batch 48 1.6 (a batch decodes until its longest row is done); transformers'
# static KV cache decoded a batch of 24 in 83 ms a step against the dynamic cache's 95 (no copy of the cache per
# step), so no one setting is best everywhere (BENCHMARKS.md, issue #20).
BATCH_CANDIDATES = (8, 16, 24)
KV_CACHES = ("dynamic", "static")  # = sdft.generation.hf.HF_KV_CACHES (a test holds them equal; not imported
# here, where torch's backend module would load with the module that only reads a stored calibration)
BATCH_SAMPLE = 48  # prompts per calibration pass


def batch_tuning_path(model_dir: Path, weights: str, threads: int, max_new_tokens: int, n_prompts: int,
                      batches: Sequence[int], caches: Sequence[str], cache_dir: str | Path | None = None) -> Path:
    from importlib.metadata import version

    from sdft.models import cache_root, file_key

    ident = (f"hf-batch:{file_key(Path(model_dir) / 'config.json')}:{weights}:{max_new_tokens}:{n_prompts}:"
             f"{tuple(batches)}:{tuple(caches)}:torch {version('torch')}:{_cpu_name()}:{threads}")
    key = hashlib.sha256(ident.encode()).hexdigest()
    return cache_root(cache_dir) / "tuning" / f"{Path(model_dir).name}-batch-{key[:16]}.json"


def measure_batch_sizes(model_dir: str | Path, prompts: Sequence[str], weights: str, threads: int,
                        max_new_tokens: int, batches: Sequence[int] = BATCH_CANDIDATES,
                        caches: Sequence[str] = KV_CACHES[:1], log: Callable[[str], None] = print,
                        **backend_kw) -> dict[str, float]:
    """Rows/s of greedy generation over ``prompts`` (chunks of twice the batch), keyed ``"<batch>:<kv cache>"``:
    every batch size with the first cache type, then the other cache types at the fastest batch size."""
    from sdft.generation.base import GenerationParams
    from sdft.generation.hf import HFBackend

    backend = HFBackend(str(model_dir), weights=weights, threads=threads, **backend_kw)
    params = GenerationParams(max_new_tokens=max_new_tokens)
    out: dict[str, float] = {}

    def run(b: int, cache: str) -> None:
        backend.batch_size, backend.kv_cache = b, cache
        t0 = time.perf_counter()
        for start in range(0, len(prompts), 2 * b):  # the run's chunks (generate_in_chunks)
            backend.generate(list(prompts[start:start + 2 * b]), params)
        out[f"{b}:{cache}"] = len(prompts) / (time.perf_counter() - t0)
        log(f"batch size {b}, {cache} KV cache: {out[f'{b}:{cache}']:.2f} rows/s")

    try:
        for cache in caches:  # warm-up
            backend.kv_cache = cache
            backend.generate(list(prompts[:2]), GenerationParams(max_new_tokens=2))
        for b in batches:
            run(b, caches[0])
        best = max(batches, key=lambda b: out[f"{b}:{caches[0]}"])
        for cache in caches[1:]:
            run(best, cache)
    finally:
        backend.close()
    return out


def pick_batch_size(model_dir: str | Path, prompts: Sequence[str], weights: str, threads: int, max_new_tokens: int,
                    cache_dir: str | Path | None = None, log: Callable[[str], None] = print,
                    batches: Sequence[int] = BATCH_CANDIDATES, caches: Sequence[str] = KV_CACHES[:1],
                    **backend_kw) -> tuple[int, str]:
    """The hf ``(batch size, KV cache)`` with the most rows/s for prompts like ``prompts`` on this machine, among
    ``batches`` x ``caches``, from its stored calibration (measured first when there is none)."""
    sample = list(prompts[:BATCH_SAMPLE])
    if not sample or (len(batches) == 1 and len(caches) == 1):
        return batches[0], caches[0]
    path = batch_tuning_path(Path(model_dir), weights, threads, max_new_tokens, len(sample), batches, caches,
                             cache_dir)
    if path.is_file():
        rates = json.loads(path.read_text())["rows_per_s"]
    else:
        log(f"--batch-size/--kv-cache auto: timing batch sizes {'/'.join(map(str, batches))}, KV caches "
            f"{'/'.join(caches)} on {len(sample)} prompts (once; {path})")
        rates = measure_batch_sizes(model_dir, sample, weights, threads, max_new_tokens, batches, caches, log=log,
                                    **backend_kw)
        atomic_write_json(path, {"model": str(model_dir), "weights": weights, "cpu": _cpu_name(), "threads": threads,
                                 "max_new_tokens": max_new_tokens, "prompts": len(sample), "rows_per_s": rates})
    best = max(rates, key=lambda k: rates[k])
    b, cache = best.split(":")
    log(f"--batch-size/--kv-cache auto: batch {b}, {cache} KV cache ({rates[best]:.2f} rows/s measured, {weights} "
        f"weights, {threads} threads)")
    return int(b), cache


def resolve_batch_size(cfg, backend_name: str | None, model, prompts: Sequence[str],
                       log: Callable[[str], None] = print) -> tuple[int, int, str]:
    """What ``batch_size: auto`` and ``kv_cache: auto`` mean for a run: ``(batch_size, chunk_size, kv_cache)`` --
    for the hf backend run locally, :func:`pick_batch_size` (the chunk raised to twice an auto batch size); for
    any other, 8 / the run's chunk size / dynamic in place of each ``auto``."""
    from sdft.generation.llamacpp import usable_cpus

    auto_b, auto_c = cfg.batch_size == "auto", cfg.kv_cache == "auto"
    batches = BATCH_CANDIDATES if auto_b else (cfg.batch_size,)
    caches = KV_CACHES if auto_c else (cfg.kv_cache,)
    if model is not None and backend_name == "hf" and getattr(cfg, "executor", "local") in (None, "local"):
        b, cache = pick_batch_size(model.hf_dir, prompts, cfg.weights, cfg.threads or usable_cpus(),
                                   cfg.max_new_tokens, cfg.cache_dir, log, batches, caches,
                                   trust_remote_code=cfg.trust_remote_code)
        return b, max(cfg.chunk_size, 2 * b) if auto_b else cfg.chunk_size, cache
    log(f"--batch-size/--kv-cache auto: {batches[0]}, {caches[0]} (the run generates with "
        f"{backend_name or 'a given backend'})")
    return batches[0], cfg.chunk_size, caches[0]
