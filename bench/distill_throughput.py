"""Distillation throughput: generated tokens/s of four ways to write the rewrites, in one run (issue #4 item 6).

Full runs (on an otherwise idle machine; one model per run, ~minutes for smollm2, much longer for qwen):

    .venv/bin/python bench/distill_throughput.py --json bench/distill_throughput_smollm2.json
    .venv/bin/python bench/distill_throughput.py --model qwen2.5-coder-0.5b --json bench/distill_throughput_qwen.json

Tiny check: ``--rows 2 --max-new-tokens 8 --threads 1``.

The same N GSM8K rows (``sdft distill --data gsm8k_train --task gsm8k``: the math-distill template with its
pre-fill, rendered in the model's chat format by sdft's own functions), the same decoding (greedy by default),
the same threads, and for each method a short warm-up before it is timed (model loading is never timed):

  a  naive HF: float32 AutoModelForCausalLM from the safetensors cache, ``model.generate`` per prompt (batch 1),
     as the authors' release generated;
  b  sdft's hf backend (left-padded batches of ``--batch-size``), called in chunks as ``sdft distill`` does;
  c  sdft's llamacpp backend (``--parallel`` slots, default: the backend's), in the same chunks;
  d  raw xllamacpp: an ``xllamacpp.Server`` on the same GGUF with the same slots, threads and KV size, the prompt
     texts sent straight to ``handle_completions`` from a thread pool (no sdft code). ``--raw-settings matched``
     (default) turns flash attention and prompt caching off as sdft's backend does, so that c/d measures our
     code's overhead; ``library`` keeps xllamacpp's defaults (flash attention auto, prompt cache on).

Warm-ups use the rows that follow the N timed ones, so no timed prompt is ever in a cache before it is timed.

Generated tokens exclude the end-of-sequence token in all four. HF (float32) and llama.cpp (Q4 weights, 8-bit
activations) split greedy paths at near-ties, so their token counts differ (a rewrite that loops runs to the
limit): compare tokens/s, not seconds. Targets: c/a >= 5, b/a >= 2, c/d >= 0.9.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TARGETS = [("b/a", "b", "a", 2.0), ("c/a", "c", "a", 5.0), ("c/d", "c", "d", 0.9)]
NAMES = {"a": "naive HF generate, batch 1", "b": "sdft hf backend", "c": "sdft llamacpp backend",
         "d": "raw xllamacpp server"}
WARMUP_TOKENS = 4


def naive_hf(hf_dir, prompts, warm, params, threads):
    """(a) What the release did: one ``model.generate`` per prompt, float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) | {tok.eos_token_id}
    kw = dict(do_sample=False, temperature=None, top_p=None, top_k=None) if params.greedy else dict(
        do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
    kw.update(pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
              repetition_penalty=params.repetition_penalty)

    def run(texts, max_new):
        n_prompt = n_gen = 0
        for i, text in enumerate(texts):
            ids = tok(text, return_tensors="pt", add_special_tokens=False)
            if not params.greedy:
                torch.manual_seed(params.seed + i)
            out = model.generate(**ids, max_new_tokens=max_new, **kw)[0, ids["input_ids"].shape[1]:].tolist()
            n_prompt += ids["input_ids"].shape[1]
            n_gen += next((k for k, t in enumerate(out) if t in eos), len(out))  # tokens before the first EOS
        return n_prompt, n_gen

    run(warm[:1], WARMUP_TOKENS)
    t0 = time.perf_counter()
    n_prompt, n_gen = run(prompts, params.max_new_tokens)
    return n_prompt, n_gen, time.perf_counter() - t0


def sdft_backend(name, ref, prompts, warm, params, threads, chunk_size, **kw):
    """(b), (c) sdft's backends, called as ``sdft distill`` calls them (``generate_in_chunks``)."""
    from sdft.generation import generate_in_chunks, make_backend

    backend = make_backend(name, ref, threads=threads, **kw)
    try:
        n_warm = getattr(backend, "parallel", None) or getattr(backend, "batch_size", 1)
        backend.generate(warm[:n_warm], replace(params, max_new_tokens=WARMUP_TOKENS))
        t0 = time.perf_counter()
        comps = [c for _, cs, _ in generate_in_chunks(backend, prompts, params, chunk_size) for c in cs]
        secs = time.perf_counter() - t0
        return sum(c.prompt_tokens for c in comps), sum(c.completion_tokens for c in comps), secs
    finally:
        backend.close()


def raw_xllamacpp(gguf, prompts, warm, params, threads, parallel, settings):
    """(d) xllamacpp used directly: prompt texts to ``handle_completions`` on ``parallel`` threads."""
    import xllamacpp

    sampling = dict(temperature=0.0, top_k=1) if params.greedy else dict(
        temperature=params.temperature, top_p=params.top_p, top_k=params.top_k, min_p=0.0)
    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_parallel = parallel
    p.n_ctx = parallel * 2048  # the same KV cache as sdft's backend (2048 tokens per slot)
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
    if settings == "matched":  # as sdft's backend; else the library's defaults
        p.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
        sampling["cache_prompt"] = False
    p.verbosity, p.ui = 1, False
    server = xllamacpp.Server(p)

    def one(i_text, max_new):
        i, text = i_text
        r = server.handle_completions(dict(sampling, prompt=text, max_tokens=max_new, seed=params.seed + i,
                                           repeat_penalty=params.repetition_penalty, stream=False))
        if "error" in r:
            raise RuntimeError(f"xllamacpp failed on prompt {i}: {r['error']}")
        eos = r["choices"][0]["finish_reason"] == "stop"  # no stop strings are sent: "stop" means EOS (counted)
        return r["usage"]["prompt_tokens"], r["usage"]["completion_tokens"] - eos

    try:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda x: one(x, WARMUP_TOKENS), enumerate(warm[:parallel])))
            t0 = time.perf_counter()
            counts = list(pool.map(lambda x: one(x, params.max_new_tokens), enumerate(prompts)))
            secs = time.perf_counter() - t0
        return sum(c[0] for c in counts), sum(c[1] for c in counts), secs
    finally:
        del server
        gc.collect()


def versions():
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("sdft", "torch", "transformers", "xllamacpp"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def main() -> None:
    from sdft.config import DistillConfig
    from sdft.generation.llamacpp import LlamaCppBackend

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="embedded alias (or .gguf / HF folder with a GGUF)")
    ap.add_argument("--rows", type=int, default=64, help="the first N GSM8K train rows")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--decoding", default="greedy", choices=["greedy", "authors"])
    ap.add_argument("--prompt-format", default="auto", choices=["auto", "chat", "raw"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="default: all cores")
    ap.add_argument("--batch-size", type=int, default=DistillConfig.batch_size, help="hf backend (b)")
    ap.add_argument("--chunk-size", type=int, default=DistillConfig.chunk_size, help="rows per generate call (b, c)")
    ap.add_argument("--parallel", type=int, default=inspect.signature(LlamaCppBackend).parameters["parallel"].default,
                    help="llama.cpp slots (c, d); default: the backend's")
    ap.add_argument("--raw-settings", default="matched", choices=["matched", "library"],
                    help="(d): flash attention and prompt cache off as in sdft's backend, or xllamacpp's defaults")
    ap.add_argument("--skip", action="append", default=[], help="methods to skip, e.g. --skip a or --skip a,b")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    skip = {m for s in a.skip for m in s.split(",") if m}
    if skip - set(NAMES):
        ap.error(f"--skip: unknown method(s) {sorted(skip - set(NAMES))}; use a, b, c, d")

    import torch

    from sdft.distillation.distill import plan
    from sdft.models import load_tokenizer, resolve_model
    from sdft.templates import default_prompt_format, render

    torch.set_num_threads(a.threads)
    n_warm = max(a.batch_size, a.parallel)  # warm-up rows: enough to fill one batch / every slot
    ref = resolve_model(a.model, log=lambda m: print(m, file=sys.stderr))
    cfg = DistillConfig(data="gsm8k_train", out="-", task="gsm8k", model=a.model, decoding=a.decoding,
                        max_new_tokens=a.max_new_tokens, limit=a.rows + n_warm, prompt_format=a.prompt_format)
    p = plan(cfg)  # rows, template and decoding exactly as `sdft distill` would choose them
    tok = load_tokenizer(ref)
    fmt = default_prompt_format(tok) if cfg.prompt_format == "auto" else cfg.prompt_format
    texts = [render(p.template, ex.instruction, ex.input, ex.output, history=ex.history, prompt_format=fmt,
                    layout=cfg.layout, tokenizer=tok) for ex in (p.examples[i] for i in p.indices)]
    prompts, warm = texts[:a.rows], texts[a.rows:]  # timed rows, then the warm-up rows that follow them
    params = p.decoding

    runs = {
        "a": lambda: naive_hf(ref.hf_dir, prompts, warm, params, a.threads),
        "b": lambda: sdft_backend("hf", ref, prompts, warm, params, a.threads, a.chunk_size, batch_size=a.batch_size),
        "c": lambda: sdft_backend("llamacpp", ref, prompts, warm, params, a.threads, a.chunk_size,
                                  parallel=a.parallel),
        "d": lambda: raw_xllamacpp(ref.gguf, prompts, warm, params, a.threads, a.parallel, a.raw_settings),
    }
    load_start = os.getloadavg()
    results = {}
    for m in [m for m in runs if m not in skip]:
        print(f"running ({m}) {NAMES[m]} ...", file=sys.stderr, flush=True)
        n_prompt, n_gen, secs = runs[m]()
        gc.collect()
        results[m] = {"method": NAMES[m], "prompts": len(prompts), "prompt_tokens": n_prompt,
                      "generated_tokens": n_gen, "seconds": round(secs, 3),
                      "tokens_per_s": round(n_gen / secs, 2) if secs else None}

    print(f"\nmodel {ref.name}, {len(prompts)} GSM8K rows ({p.template.name}, {fmt} format), {a.decoding}, "
          f"max {a.max_new_tokens} new tokens, {a.threads} threads, hf batch {a.batch_size}, "
          f"llama.cpp {a.parallel} slots, chunks of {a.chunk_size}, raw settings {a.raw_settings}; "
          f"{os.cpu_count()} CPUs, load average {load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print(f"{'method':<34} {'prompts':>7} {'gen tokens':>10} {'seconds':>9} {'tokens/s':>9}")
    for m, r in results.items():
        print(f"({m}) {r['method']:<30} {r['prompts']:>7} {r['generated_tokens']:>10} {r['seconds']:>9.2f} "
              f"{r['tokens_per_s'] or 0:>9.2f}")
    ratios = {}
    for label, num, den, target in TARGETS:
        tn, td = (results.get(x, {}).get("tokens_per_s") for x in (num, den))
        value = round(tn / td, 3) if tn and td else None
        ratios[label] = {"value": value, "target": target,
                         "pass": None if value is None else value >= target}
        verdict = "n/a (skipped)" if value is None else f"{value:.2f}  {'PASS' if value >= target else 'FAIL'}"
        print(f"{label} >= {target:<4} {verdict}")

    if a.json:
        report = {
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "platform": platform.platform(), "processor": platform.processor(),
                        "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
            "versions": versions(), "model": {"name": ref.name, "hf_dir": str(ref.hf_dir), "gguf": str(ref.gguf)},
            "rows": len(prompts), "row_indices": p.indices[:a.rows], "template": p.template.name, "prompt_format": fmt,
            "decoding": params.to_dict(), "max_new_tokens": a.max_new_tokens, "threads": a.threads,
            "warmup_rows": n_warm, "batch_size": a.batch_size, "chunk_size": a.chunk_size, "parallel": a.parallel,
            "raw_settings": a.raw_settings, "results": results, "ratios": ratios,
        }
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
