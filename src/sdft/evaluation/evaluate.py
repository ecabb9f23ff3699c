"""``sdft eval``: answer benchmark prompts with a model (optionally base + LoRA adapter) and score them.

Per task, ``<out>/<task>/generations.jsonl`` is appended as answers finish (resumable, like distillation);
then ``samples.jsonl`` (prompt, output, extracted answer, gold, correct), ``results.json`` (score, n, 95% Wilson
interval) and ``results.md`` are written by :mod:`sdft.evaluation.scoring`. ``<out>/results.json|md`` gather all tasks.
A judged task (``alpacaeval``) has no per-answer rule: after generation its ``aggregate`` hook has the judge
(``cfg.judge``, loaded once, after the answers exist) compare every answer with the reference in both orders.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from sdft.config import EvalConfig, server_options

from sdft.options import fingerprint, to_dict
from sdft.evaluation.benchmarks import EvalTask
from sdft.evaluation.sandbox import using_mode
from sdft.evaluation.task_data import load_samples, parse_task_data
from sdft.evaluation.task_file import data_fingerprint, resolve_tasks
from sdft.generation import (DECODING_PRESETS, GenerationParams, executor_options, generate_in_chunks, make_backend,
                             pick_backend)
from sdft.models import model_and_tokenizer
from sdft.evaluation.scoring import default_workers, score_samples, write_results
from sdft.evaluation.tables import results_markdown
from sdft.store import RecordWriter, atomic_write_json, atomic_write_text, guard_run_folder, read_records, run_lock
from sdft.templates import resolve_prompt_format

GENERATIONS = "generations.jsonl"


def decoding_for(cfg: EvalConfig, task: EvalTask) -> GenerationParams:
    if cfg.decoding not in DECODING_PRESETS:
        raise ValueError(f"--decoding '{cfg.decoding}': use one of {', '.join(DECODING_PRESETS)}")
    base = DECODING_PRESETS[cfg.decoding]
    return replace(base, max_new_tokens=cfg.max_new_tokens or task.max_new_tokens, stop=tuple(task.stop),
                   seed=cfg.seed)


def evaluate(cfg: EvalConfig, *, progress: bool = True, backend=None, tokenizer=None,
             log: Callable[[str], None] = print, deterministic: bool | None = None) -> list[dict[str, Any]]:
    """Evaluate ``cfg.model`` (+ adapter) on ``cfg.tasks``. Bad input fails before the output folder exists, which
    :func:`~sdft.store.run_lock` then holds for the whole run. ``deterministic`` (default: the config's, else off):
    bit-reproducible generation (see docs/reproducibility.md)."""
    tasks = resolve_tasks(cfg.tasks, cfg.task_files, cfg.task_data)  # bad names/task files fail before any model
    stray = sorted(set(cfg.task_limits) - set(cfg.tasks))
    if stray:
        raise ValueError(f"task_limits names task(s) not evaluated here: {', '.join(stray)}")
    judged = [t.name for t in tasks if getattr(t, "aggregate", None)]
    if judged and not cfg.judge:
        raise ValueError(f"{', '.join(judged)} is scored pairwise by a judge model: pass --judge MODEL (an embedded "
                         f"alias such as 'default', a .gguf file or an HF folder; check it first with "
                         f"`sdft judge-check --judge MODEL`)")
    if deterministic is None:
        deterministic = bool(getattr(cfg, "deterministic", False))
    with run_lock(cfg.out):
        return _evaluate(cfg, tasks, progress=progress, backend=backend, tokenizer=tokenizer, log=log,
                         deterministic=deterministic)


def _evaluate(cfg: EvalConfig, tasks: list[EvalTask], *, progress: bool, backend, tokenizer,
              log: Callable[[str], None], deterministic: bool) -> list[dict[str, Any]]:
    judge = None
    out = Path(cfg.out)
    model, tokenizer = model_and_tokenizer(cfg.model, cfg.cache_dir, cfg.trust_remote_code, backend, tokenizer, log)
    fmt = resolve_prompt_format(tokenizer, cfg.prompt_format)
    backend_name = getattr(backend, "name", None) or pick_backend(cfg.backend, model, cfg.adapter)
    fp = fingerprint(cfg)
    if fp.get("api_model") is None:  # runs made before --api-model existed still resume
        fp.pop("api_model", None)
    fp.update(prompt_format=fmt, backend=backend_name)
    task_data = parse_task_data(cfg.task_data)
    data_fingerprint(fp, tasks, task_data)  # the sha256 of user data and task files
    guard_run_folder(out, fp, cfg.overwrite, [t.name for t in tasks] + ["results.json", "results.md"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", {"fingerprint": fp, "config": to_dict(cfg)})
    results = []
    try:
        for task in tasks:
            samples = load_samples(task, task_data.get(task.name))
            limit = cfg.task_limits.get(task.name, cfg.limit)
            if limit is not None:
                samples = samples[:int(limit)]
            tdir = out / task.name
            done = {r["index"]: r for r in read_records(tdir / GENERATIONS, warn=lambda w: log(f"warning: {w}"))}
            todo = [s for s in samples if s.index not in done]
            params = decoding_for(cfg, task)
            t0 = time.perf_counter()
            if todo:
                if backend is None:
                    backend = make_backend(backend_name, model, adapter=cfg.adapter, batch_size=cfg.batch_size,
                                           tokenizer=tokenizer, trust_remote_code=cfg.trust_remote_code,
                                           threads=cfg.threads, deterministic=deterministic, weights=cfg.weights,
                                           cache_dir=cfg.cache_dir,
                                           **server_options(cfg), **executor_options(cfg))
                prompts = [task.prompt(s, prompt_format=fmt, tokenizer=tokenizer, layout=cfg.layout) for s in todo]
                from sdft.progress import simple_progress

                with simple_progress(task.name, len(samples), len(done), enabled=progress) as advance, \
                        RecordWriter(tdir / GENERATIONS) as writer:
                    for start, comps, _ in generate_in_chunks(backend, prompts, params, cfg.chunk_size):
                        recs = [{"index": s.index, "prompt": p, "output": c.text, "finish_reason": c.finish_reason,
                                 "completion_tokens": c.completion_tokens}
                                for s, p, c in zip(todo[start:], prompts[start:], comps)]
                        writer.write(recs)
                        done.update({r["index"]: r for r in recs})
                        advance(len(recs))
            gen_seconds = time.perf_counter() - t0
            info = dict(model=cfg.model, adapter=cfg.adapter, backend=backend_name, prompt_format=fmt,
                        layout=cfg.layout, decoding=params.to_dict(), generation_seconds=round(gen_seconds, 2),
                        deterministic=deterministic)
            if getattr(task, "aggregate", None):
                if judge is None:
                    from sdft.evaluation.judge_logprob import make_mode_judge

                    judge = make_mode_judge(cfg.judge, cfg.judge_backend, mode=cfg.judge_mode, prompt=cfg.judge_prompt,
                                            cache_dir=cfg.cache_dir, threads=cfg.threads, log=log)
                res = task.aggregate([done[s.index] for s in samples], samples, judge, tdir,
                                     unparseable=cfg.judge_unparseable, generator=_generator_name(cfg), **info)
                log(f"{task.name}: {res['score']:.1%} {task.metric} against the reference (n={res['n']} pairs, "
                    f"95% CI {res['ci95'][0]:.1%}–{res['ci95'][1]:.1%}; judge {cfg.judge})")
                for w in res.get("warnings", []):
                    log(f"  warning: {w}")
                results.append(res)
                continue
            with using_mode(cfg.sandbox):  # how code tasks run their programs (set before any worker starts)
                records = score_samples(task, [(s, done[s.index]) for s in samples],
                                        cfg.workers or default_workers(task))
            for rec in records:
                rec["finish_reason"] = done[rec["index"]].get("finish_reason")
            res = write_results(tdir, task, records, **info,
                                mean_output_chars=round(sum(len(r["output"]) for r in records) / max(1, len(records)), 1))
            log(f"{task.name}: {res['score']:.1%} {task.metric} (n={res['n']}, 95% CI "
                f"{res['ci95'][0]:.1%}–{res['ci95'][1]:.1%})")
            results.append(res)
    finally:
        if backend is not None and model is not None and hasattr(backend, "close"):
            backend.close()
        if judge is not None and hasattr(judge.backend, "close"):
            judge.backend.close()
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", results_markdown(results))
    return results


def _generator_name(cfg: EvalConfig) -> str:
    """The ``generator`` field of AlpacaEval's model_outputs.json: the model, plus the adapter's folder name."""
    return cfg.model + (f"+{Path(cfg.adapter).name}" if cfg.adapter else "")
