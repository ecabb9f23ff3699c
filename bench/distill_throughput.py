"""Distillation throughput: four ways to write the rewrites (and an optional second engine), both embedded models,
in one run (issues #4, #20).

The full run (on an otherwise idle machine, ~20 minutes; BENCHMARKS.md):

    .venv/bin/python bench/distill_throughput.py --json bench/results/distill_throughput.json

Tiny check: ``--models smollm2-135m --rows 2 --max-new-tokens 8 --threads 1 --weights native``.

Per model, rows/s counts start-up (model load; one-time conversions into the model cache are done before any clock
starts) plus generation; tokens/s counts generation only. For llama.cpp (c) each ``--weights`` type is its own arm
(``c:f32`` ...: :mod:`sdft.generation.gguf_weights`), and each is profiled: a second pass over the same prompts
with one new token gives the prompt-processing time, the rest of the full pass is decoding.

The same N GSM8K rows (``sdft distill --data gsm8k_train --task gsm8k``: the math-distill template with its
pre-fill, rendered in the model's chat format by sdft's own functions), the same decoding (greedy by default),
the same threads, and for each method a short warm-up before it is timed (model loading is never timed):

  a  naive HF: float32 AutoModelForCausalLM from the safetensors cache, ``model.generate`` per prompt (batch 1),
     as the authors' release generated;
  b  sdft's hf backend (left-padded batches of ``--batch-size``), called in chunks as ``sdft distill`` does; one
     arm per ``--hf-weights`` type (``b:native`` float32, ``b:bf16`` torch bfloat16), each profiled as (c);
  c  sdft's llamacpp backend (``--parallel`` slots, default: the backend's), in the same chunks;
  d  raw xllamacpp: an ``xllamacpp.Server`` on the same GGUF with the same slots, threads and KV size, the prompt
     texts sent straight to ``handle_completions`` from a thread pool (no sdft code). ``--raw-settings matched``
     (default) turns flash attention and prompt caching off as sdft's backend does, so that c/d measures our
     code's overhead; ``library`` keeps xllamacpp's defaults (flash attention auto, prompt cache on).

  f  cross-check on a second engine (only when the optional ``ctranslate2`` package is installed; otherwise
     skipped with a note): CTranslate2's ``Generator.generate_batch`` on int8 weights with float32 activations
     (converted once from the same safetensors, never timed), ``--parallel`` rows per batch. No sdft code: it says
     whether another CPU engine gets more out of this machine than llama.cpp does (the ceiling, issue #20).

``--repeats N`` runs every arm N times, in forward then reverse order (ABBA...), each in a fresh process; an arm's
row is its median run by rows/s (the lower one of the middle two for an even N), ``rows_per_s_runs`` lists all of
them, and the ratios use those rows -- a single run of one arm moves by ~15% on a shared 2-core VM.

Warm-ups use the rows that follow the N timed ones, so no timed prompt is ever in a cache before it is timed.

Generated tokens exclude the end-of-sequence token in all four. HF (float32) and llama.cpp (Q4 weights, 8-bit
activations) split greedy paths at near-ties, so their token counts differ (a rewrite that loops runs to the
limit): compare tokens/s, not seconds. Targets: c/a >= 5, b/a >= 2, c/d >= 0.9.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import inspect
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# (label, numerator, denominator, target, unit); "c:*" / "e:*": the best of those arms
TARGETS = [("b/a", "b:native", "a", 2.0, "tokens"), ("c/a", "c:*", "a", 5.0, "rows"), ("c/d", "c:native", "d", 0.9, "tokens"),
           ("e/a", "e:*", "a", 5.0, "rows"), ("f/a", "f", "a", None, "rows")]  # target None: a cross-check
NAMES = {"a": "naive HF generate, batch 1", "b": "sdft hf backend", "c": "sdft llamacpp backend",
         "d": "raw xllamacpp server", "e": "`sdft distill` CLI end to end",
         "f": "CTranslate2 generate_batch, int8_float32 (cross-check)"}
WARMUP_TOKENS = 4


def naive_hf(hf_dir, prompts, warm, params, threads):
    """(a) What the release did: one ``model.generate`` per prompt, float32."""
    t_load = time.perf_counter()  # start-up: imports and loading, as every arm counts them (a fresh process each)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    load = time.perf_counter() - t_load
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
    return dict(prompt_tokens=n_prompt, generated_tokens=n_gen, seconds=time.perf_counter() - t0, startup=load)


def sdft_backend(name, ref, prompts, warm, params, threads, chunk_size, profile=False, **kw):
    """(b), (c) sdft's backends, called as ``sdft distill`` calls them (``generate_in_chunks``). ``profile``: then
    the same prompts again with one new token (the prompt-processing time of the pass)."""
    from sdft.generation import generate_in_chunks, make_backend

    if name == "llamacpp" and kw.get("weights", "native") != "native":  # the one-time conversion is never timed
        from sdft.generation.gguf_weights import weights_gguf

        weights_gguf(ref.gguf, kw["weights"], log=lambda m: print(m, file=sys.stderr))
    t_load = time.perf_counter()
    backend = make_backend(name, ref, threads=threads, **kw)
    load = time.perf_counter() - t_load
    try:
        n_warm = getattr(backend, "parallel", None) or getattr(backend, "batch_size", 1)
        backend.generate(warm[:n_warm], replace(params, max_new_tokens=WARMUP_TOKENS))
        t0 = time.perf_counter()
        comps = [c for _, cs, _ in generate_in_chunks(backend, prompts, params, chunk_size) for c in cs]
        secs = time.perf_counter() - t0
        out = dict(prompt_tokens=sum(c.prompt_tokens for c in comps),
                   generated_tokens=sum(c.completion_tokens for c in comps), seconds=secs, startup=load,
                   texts=[c.text for c in comps])
        if profile:
            t0 = time.perf_counter()
            for _ in generate_in_chunks(backend, prompts, replace(params, max_new_tokens=1), chunk_size):
                pass
            out["prompt_seconds"] = time.perf_counter() - t0
        return out
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
    t_load = time.perf_counter()
    server = xllamacpp.Server(p)
    load = time.perf_counter() - t_load

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
        return dict(prompt_tokens=sum(c[0] for c in counts), generated_tokens=sum(c[1] for c in counts),
                    seconds=secs, startup=load)
    finally:
        del server
        gc.collect()


def ctranslate2_arm(hf_dir, prompts, warm, params, threads, batch):
    """(f) CTranslate2 on int8 weights / float32 activations, batches of ``batch`` (its own length sorting)."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter
    from transformers import AutoTokenizer

    from sdft.models import cache_root

    out = cache_root() / "ctranslate2" / f"{Path(hf_dir).parent.name}-int8_float32"  # <cache>/<model>/hf
    if not (out / "model.bin").is_file():  # once, never timed
        TransformersConverter(str(hf_dir)).convert(str(out), quantization="int8_float32", force=True)
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    pieces = [tok.convert_ids_to_tokens(tok(t, add_special_tokens=False)["input_ids"]) for t in prompts + warm]
    sampling = dict(sampling_topk=1) if params.greedy else dict(
        sampling_temperature=params.temperature, sampling_topk=params.top_k or 0, sampling_topp=params.top_p,
        random_seed=params.seed)
    t_load = time.perf_counter()
    gen = ctranslate2.Generator(str(out), device="cpu", intra_threads=threads, inter_threads=1)
    load = time.perf_counter() - t_load

    def run(batch_pieces, max_new):
        return gen.generate_batch(batch_pieces, max_batch_size=batch, max_length=max_new, include_prompt_in_result=False,
                                  end_token=[tok.eos_token], repetition_penalty=params.repetition_penalty, **sampling)

    run(pieces[len(prompts):len(prompts) + batch], WARMUP_TOKENS)
    t0 = time.perf_counter()
    res = run(pieces[:len(prompts)], params.max_new_tokens)
    secs = time.perf_counter() - t0
    ids = [r.sequences_ids[0] for r in res]
    return dict(prompt_tokens=sum(len(p) for p in pieces[:len(prompts)]), generated_tokens=sum(len(i) for i in ids),
                seconds=secs, startup=load, texts=[tok.decode(i, skip_special_tokens=True) for i in ids])


def sdft_cli(model, rows, params, a, weights, backend="llamacpp", batch_size=None):
    """(e) ``sdft distill`` as a user runs it, once per backend (``e:llamacpp``, ``e:hf``), ``--weights auto`` (and
    for hf ``--batch-size auto --kv-cache auto``): a fresh process, the same rows (the first N GSM8K train rows); wall clock from
    process start to exit (start-up, model resolution, backend load, writing the folder; the stored calibrations
    are reused, their one-time cost is reported apart)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "sdft", "distill", "--data", "gsm8k_train", "--task", "gsm8k", "--model", model,
               "--limit", str(rows), "--decoding", a.decoding, "--max-new-tokens", str(a.max_new_tokens),
               "--threads", str(a.threads), "--backend", backend, "--weights", weights, "--out", f"{tmp}/d",
               "--batch-size", str(batch_size or a.batch_size), "--no-progress"] + (
                   ["--kv-cache", "auto"] if batch_size == "auto" else [])
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        m = json.load(open(f"{tmp}/d/manifest.json"))
        cfg = json.load(open(f"{tmp}/d/config.json"))
    gen = m["this_session"]["seconds"]
    return dict(prompt_tokens=None, generated_tokens=m["this_session"]["generated_tokens"], seconds=gen,
                startup=wall - gen, weights=cfg["config"]["weights"],
                batch_size=f"{cfg['config']['batch_size']} --kv-cache {cfg['config'].get('kv_cache', 'dynamic')}")


def _in_child(fn, args, kwargs, threads):
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    return fn(*args, **kwargs)


def isolated(fn, args, kwargs, threads):
    """``fn(*args, **kwargs)`` in a fresh (spawned) process: no arm inherits another's threads, allocator state or
    caches (measured: llama.cpp arms run right after the torch arms in one process were ~30% slower)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(_in_child, fn, args, kwargs, threads).result()


def versions():
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("sdft", "torch", "transformers", "xllamacpp"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def prompts_for(model, rows, n_warm, a):
    """The rows' distillation prompts exactly as ``sdft distill`` renders them, then the warm-up rows after them."""
    from sdft.config import DistillConfig
    from sdft.distillation.distill import plan
    from sdft.models import load_tokenizer, resolve_model
    from sdft.templates import render, resolve_prompt_format

    ref = resolve_model(model, log=lambda m: print(m, file=sys.stderr))
    cfg = DistillConfig(data="gsm8k_train", out="-", task="gsm8k", model=model, decoding=a.decoding,
                        max_new_tokens=a.max_new_tokens, limit=rows + n_warm, prompt_format=a.prompt_format)
    p = plan(cfg)  # rows, template and decoding exactly as `sdft distill` would choose them
    tok = load_tokenizer(ref)
    fmt = resolve_prompt_format(tok, cfg.prompt_format)
    texts = [render(p.template, ex.instruction, ex.input, ex.output, history=ex.history, prompt_format=fmt,
                    layout=cfg.layout, tokenizer=tok) for ex in (p.examples[i] for i in p.indices)]
    return ref, p, fmt, texts[:rows], texts[rows:]


def summarise_runs(name, runs, rows):
    """One arm's row from its repeated runs: the median run by rows/s, with every run's rows/s listed."""
    each = [summarise(name, r, rows) for r in runs]
    pick = sorted(range(len(each)), key=lambda k: each[k]["rows_per_s"])[(len(each) - 1) // 2]
    out = dict(each[pick])
    if len(each) > 1:
        out["rows_per_s_runs"] = [e["rows_per_s"] for e in each]
    return out, runs[pick].get("texts")


def summarise(name, r, rows):
    out = {"method": name, "prompts": rows, **{k: v for k, v in r.items() if k != "texts"}}
    secs = r["seconds"]
    out["tokens_per_s"] = round(r["generated_tokens"] / secs, 2) if secs else None
    out["rows_per_s"] = round(rows / (secs + r["startup"]), 4)
    if "prompt_seconds" in r:  # the profile: prompt processing vs decoding in this pass
        ps = r["prompt_seconds"]
        out["profile"] = {"prompt_seconds": round(ps, 2), "decode_seconds": round(max(secs - ps, 0.0), 2),
                          "prompt_share": round(min(ps / secs, 1.0), 3) if secs else None,
                          "prompt_tokens_per_s": round(r["prompt_tokens"] / ps, 1) if ps else None,
                          "decode_tokens_per_s": round(r["generated_tokens"] / (secs - ps), 1) if secs > ps else None}
    return out


def bench_model(model, rows, a, skip, weights, hf_weights):
    n_warm = max(a.batch_size, a.parallel)  # warm-up rows: enough to fill one batch / every slot
    ref, p, fmt, prompts, warm = prompts_for(model, rows, n_warm, a)
    params = p.decoding
    runs = {  # (function, args, kwargs): each arm runs in a fresh process of its own (isolated())
        "a": (naive_hf, (ref.hf_dir, prompts, warm, params, a.threads), {}),
        **{f"b:{w}": (sdft_backend, ("hf", ref, prompts, warm, params, a.threads, a.chunk_size),
                      {"profile": True, "batch_size": a.batch_size, "weights": w}) for w in hf_weights},
        **{f"c:{w}": (sdft_backend, ("llamacpp", ref, prompts, warm, params, a.threads, a.chunk_size),
                      {"profile": True, "parallel": a.parallel, "weights": w}) for w in weights},
        "d": (raw_xllamacpp, (ref.gguf, prompts, warm, params, a.threads, a.parallel, a.raw_settings), {}),
        "f": (ctranslate2_arm, (ref.hf_dir, prompts, warm, params, a.threads, a.parallel), {}),
    }
    if "f" not in skip and importlib.util.find_spec("ctranslate2") is None:
        print("(f) skipped: the optional ctranslate2 package is not installed (pip install ctranslate2)", file=sys.stderr)
        skip = skip | {"f"}
    arms = [m for m in runs if m.split(":")[0] not in skip | {"e"}]
    done = {m: [] for m in arms}
    for k in range(a.repeats):  # ABBA: forward, then reversed, ... (a slow drift of the machine hits every arm alike)
        for m in (arms if k % 2 == 0 else arms[::-1]):
            print(f"[{model}] running ({m}) {NAMES[m.split(':')[0]]} (run {k + 1}/{a.repeats}) ...", file=sys.stderr,
                  flush=True)
            done[m].append(isolated(*runs[m], threads=a.threads))
            gc.collect()
    results, texts = {}, {}
    for m in arms:
        results[m], texts[m] = summarise_runs(NAMES[m.split(":")[0]] + (f", {m[2:]} weights" if ":" in m else ""),
                                              done[m], len(prompts))
    auto = {}
    e_runs_on = {b for b in ("llamacpp", "hf") if "e" not in skip and f"e:{b}" not in skip}
    for arm, backend, target in (("c", "llamacpp", ref.gguf), ("b", "hf", ref.hf_dir)):
        arms_here = [m for m in results if m.startswith(arm + ":")]
        if arms_here or backend in e_runs_on:  # what --weights auto picks here (once), against the best arm
            from sdft.generation.tuning import BATCH_SAMPLE, KV_CACHES, pick_batch_size, pick_weights
            from sdft.models import load_tokenizer

            tok = load_tokenizer(ref)
            log = lambda m: print(m, file=sys.stderr)  # noqa: E731
            t0 = time.perf_counter()
            picked = pick_weights(target, prompts, lambda t: tok(t, add_special_tokens=False)["input_ids"],
                                  a.max_new_tokens, a.threads, a.parallel, log=log, backend=backend,
                                  batch_size=a.batch_size)
            auto[backend] = {"picked": picked, "seconds": round(time.perf_counter() - t0, 1)}
            if arms_here:
                auto[backend]["measured_best"] = max(arms_here, key=lambda m: results[m]["rows_per_s"])[2:]
            if backend == "hf" and backend in e_runs_on:  # e:hf runs --batch-size/--kv-cache auto: time it once
                t0 = time.perf_counter()
                auto["hf"]["batch_size"] = "{} --kv-cache {}".format(*pick_batch_size(
                    target, prompts[:BATCH_SAMPLE], picked, a.threads, a.max_new_tokens, log=log, caches=KV_CACHES))
                auto["hf"]["batch_seconds"] = round(time.perf_counter() - t0, 1)
    for backend in ("llamacpp", "hf"):  # last: the stored calibration is reused, so e times a user's later runs
        if "e" in skip or f"e:{backend}" in skip:
            continue
        e_runs = []
        for k in range(a.repeats):
            print(f"[{model}] running (e:{backend}) {NAMES['e']} (run {k + 1}/{a.repeats}) ...", file=sys.stderr,
                  flush=True)
            e_runs.append(sdft_cli(model, rows, params, a, "auto", backend, "auto" if backend == "hf" else None))
        picked_weights = {r.pop("weights") for r in e_runs}
        picked_batch = {str(r.pop("batch_size")) for r in e_runs}
        results[f"e:{backend}"], _ = summarise_runs(
            NAMES["e"] + f", --backend {backend} --weights {'/'.join(sorted(picked_weights))}"
            + (f" --batch-size {'/'.join(sorted(picked_batch))}" if backend == "hf" else ""), e_runs, len(prompts))
    greedy_same = {}
    if params.greedy:  # how far each weight type moves greedy answers from its backend's native ones
        for arm in ("b", "c"):
            ref_texts = texts.get(f"{arm}:native")
            greedy_same.update({m: sum(x == y for x, y in zip(t, ref_texts)) for m, t in texts.items()
                                if ref_texts is not None and m.startswith(arm + ":") and t is not None})
    return {"model": {"name": ref.name, "hf_dir": str(ref.hf_dir), "gguf": str(ref.gguf)}, "rows": len(prompts),
            "row_indices": p.indices[:rows], "template": p.template.name, "prompt_format": fmt,
            "decoding": params.to_dict(), "results": results, "greedy_equal_to_native": greedy_same, "auto": auto,
            "ratios": ratios(results)}


def ratios(results):
    out = {}
    each_e = [(f"{m}/a", m, "a", 5.0, "rows") for m in results if m.startswith("e:")]  # every end-to-end arm too
    for label, num, den, target, unit in TARGETS + each_e:
        if num.endswith(":*"):
            num = max((m for m in results if m.startswith(num[:-1])), key=lambda m: results[m]["rows_per_s"],
                      default=num)
        key = "rows_per_s" if unit == "rows" else "tokens_per_s"
        tn, td = (results.get(x, {}).get(key) for x in (num, den))
        value = round(tn / td, 3) if tn and td else None
        out[label] = {"value": value, "target": target, "numerator": num,
                      "unit": "rows/s with start-up" if unit == "rows" else "tokens/s",
                      "pass": None if value is None or target is None else value >= target}
    return out


def print_model(res):
    print(f"\nmodel {res['model']['name']}: {res['rows']} GSM8K rows ({res['template']}, {res['prompt_format']} "
          f"format)")
    print(f"{'method':<46} {'gen tok':>8} {'gen s':>7} {'tok/s':>7} {'start s':>7} {'rows/s':>7} "
          f"{'prompt s':>8} {'prompt tok/s':>12} {'decode tok/s':>12}")
    for m, r in res["results"].items():
        pr = r.get("profile") or {}
        print(f"({m}) {r['method']:<41} {r['generated_tokens']:>8} {r['seconds']:>7.1f} {r['tokens_per_s'] or 0:>7.1f} "
              f"{r['startup']:>7.1f} {r['rows_per_s']:>7.3f} {pr.get('prompt_seconds', float('nan')):>8.1f} "
              f"{pr.get('prompt_tokens_per_s') or float('nan'):>12.1f} {pr.get('decode_tokens_per_s') or float('nan'):>12.1f}"
              + (f"  runs {' / '.join(f'{x:.3f}' for x in r['rows_per_s_runs'])}" if r.get("rows_per_s_runs") else ""))
    for backend, au in (res.get("auto") or {}).items():
        print(f"{backend} --weights auto picks {au['picked']} (calibration {au['seconds']} s, or 0 when stored)"
              + (f"; the best measured here: {au['measured_best']}" if "measured_best" in au else "")
              + (f"; --batch-size auto picks {au['batch_size']} (timed in {au['batch_seconds']} s, or 0 when stored)"
                 if "batch_size" in au else ""))
    if res["greedy_equal_to_native"]:
        print("greedy answers equal to their backend's native ones: " + ", ".join(
            f"{m} {n}/{res['rows']}" for m, n in res["greedy_equal_to_native"].items()))


def main() -> None:
    from sdft.config import DistillConfig
    from sdft.generation.gguf_weights import WEIGHT_TYPES
    from sdft.generation.hf import HF_WEIGHT_TYPES
    from sdft.generation.llamacpp import LlamaCppBackend

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b", help="embedded aliases, comma-separated")
    ap.add_argument("--rows", default="24,8", help="GSM8K train rows per model (one number, or one per model)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--decoding", default="greedy", choices=["greedy", "authors"])
    ap.add_argument("--prompt-format", default="auto", choices=["auto", "chat", "raw"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="default: all cores")
    ap.add_argument("--batch-size", type=int, default=DistillConfig.batch_size, help="hf backend (b)")
    ap.add_argument("--chunk-size", type=int, default=DistillConfig.chunk_size, help="rows per generate call (b, c)")
    ap.add_argument("--parallel", type=int, default=inspect.signature(LlamaCppBackend).parameters["parallel"].default,
                    help="llama.cpp slots (c, d); default: the backend's")
    ap.add_argument("--weights", default=",".join(WEIGHT_TYPES), help="llama.cpp weight types, one (c) arm each")
    ap.add_argument("--hf-weights", default=",".join(HF_WEIGHT_TYPES), help="hf weight types, one (b) arm each")
    ap.add_argument("--raw-settings", default="matched", choices=["matched", "library"],
                    help="(d): flash attention and prompt cache off as in sdft's backend, or xllamacpp's defaults")
    ap.add_argument("--skip", action="append", default=[], help="methods to skip, e.g. --skip a or --skip a,b")
    ap.add_argument("--repeats", type=int, default=1, help="runs per arm, in ABBA order; each arm reports its median")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    skip = {m for s in a.skip for m in s.split(",") if m}
    if skip - set(NAMES) - {"e:llamacpp", "e:hf"}:
        ap.error(f"--skip: unknown method(s) {sorted(skip - set(NAMES))}; use a, b, c, d, e, e:llamacpp, e:hf, f")
    if a.repeats < 1:
        ap.error("--repeats: at least 1")
    weights = [w for w in a.weights.split(",") if w]
    if set(weights) - set(WEIGHT_TYPES):
        ap.error(f"--weights: use {', '.join(WEIGHT_TYPES)}")
    hf_weights = [w for w in a.hf_weights.split(",") if w]
    if set(hf_weights) - set(HF_WEIGHT_TYPES):
        ap.error(f"--hf-weights: use {', '.join(HF_WEIGHT_TYPES)}")
    models = [m for m in a.models.split(",") if m]
    rows = [int(x) for x in a.rows.split(",")]
    rows = rows * len(models) if len(rows) == 1 else rows
    if len(rows) != len(models):
        ap.error("--rows: one number, or one per model")

    import torch

    torch.set_num_threads(a.threads)
    load_start = os.getloadavg()
    per_model = [bench_model(m, n, a, skip, weights, hf_weights) for m, n in zip(models, rows)]
    load_end = os.getloadavg()
    print(f"\n{a.decoding}, max {a.max_new_tokens} new tokens, {a.threads} threads, hf batch {a.batch_size}, "
          f"llama.cpp {a.parallel} slots, chunks of {a.chunk_size}, raw settings {a.raw_settings}; "
          f"{os.cpu_count()} CPUs, load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end")
    for res in per_model:
        print_model(res)
    print()
    for res in per_model:  # the ratios last
        for label, r in res["ratios"].items():
            verdict = "n/a (skipped)" if r["value"] is None else f"{r['value']:.2f}  " + (
                "(cross-check, no target)" if r["target"] is None else "PASS" if r["pass"] else "FAIL")
            goal = f">= {r['target']:<4}" if r["target"] is not None else " " * 7
            print(f"{res['model']['name']:<20} {label} ({r['numerator']}, {r['unit']}) {goal} {verdict}")

    if a.json:
        report = {
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "platform": platform.platform(), "processor": platform.processor(),
                        "loadavg_start": load_start, "loadavg_end": load_end},
            "versions": versions(), "max_new_tokens": a.max_new_tokens, "threads": a.threads,
            "batch_size": a.batch_size, "chunk_size": a.chunk_size, "parallel": a.parallel,
            "raw_settings": a.raw_settings, "repeats": a.repeats, "weights": weights, "hf_weights": hf_weights,
            "models": per_model,
        }
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
