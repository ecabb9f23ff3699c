"""``sdft distill``: the seed model rewrites every response in its own words; a task check decides whether
the rewrite (accepted) or the original (rejected) goes into the training set (paper eq. 3-4).

Output folder:
- ``rows.jsonl``: one record per finished row, appended as it finishes (resumable; see :mod:`sdft.store`);
- ``distilled.json`` / ``original.json``: the SDFT and vanilla training sets in LLaMA-Factory's Alpaca JSON,
  with a ``dataset_info.json`` naming both;
- ``config.json`` (the resolved config) and ``manifest.json`` (model, versions, input sha256, counts,
  acceptance by reason, tokens/s).
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

from sdft.version import __version__
from sdft.distillation.checks import CHECKS, CLEANERS, Check, banned_phrases, first_rejection, resolve_check
from sdft.config import DistillConfig, server_options
from sdft.options import to_dict
from sdft.options import fingerprint as config_fingerprint
from sdft.data import Example, Source, file_sha256, load_examples, resolve_source, select_indices
from sdft.generation import (DECODING_PRESETS, GenerationParams, executor_options, generate_in_chunks, make_backend,
                             pick_backend)
from sdft.models import ResolvedModel, model_and_tokenizer
from sdft.store import (RecordScan, RecordWriter, RunConflict, atomic_write_json, guard_run_folder, quarantine_path,
                        read_records, run_lock, scan_records)
from sdft.distillation.tasks import Task, get_task
from sdft.prompts import framed_prompt
from sdft.templates import Template, get_template, resolve_prompt_format

ROWS, MANIFEST, CONFIG = "rows.jsonl", "manifest.json", "config.json"


class Decision(NamedTuple):
    output: str  # what training will use: the checked rewrite, or the original
    accepted: bool
    reason: str  # "accepted" or why the rewrite was rejected


def decide(distilled: str, original: str, finish_reason: str, checks: Sequence[Check],
           clean: Callable[[str], str] = str.strip, allow_empty: bool = False, truncated: str = "keep") -> Decision:
    """Pure decision for one row. ``output`` is exactly the text that was checked when accepted, else the
    whitespace-stripped original (as the release strips every field). A rewrite cut off at the token limit
    (``finish_reason`` "length") is checked like any other (the release) unless ``truncated`` is "reject"."""
    text = clean(distilled)
    if finish_reason == "length" and truncated == "reject":
        reason: Optional[str] = "truncated"
    elif not text and not allow_empty:
        reason = "empty"
    else:
        reason = first_rejection(text, original, list(checks))
    if reason:
        return Decision(original.strip(), False, reason)
    return Decision(text, True, "accepted")


@dataclass
class Plan:
    cfg: DistillConfig
    source: Source
    task: Task
    template: Template
    examples: list[Example]
    indices: list[int]
    checks: list[Check]
    input_sha256: str
    decoding: GenerationParams
    extra: dict[str, Any] = field(default_factory=dict)
    train_template: Template | None = None  # frames train and self: the template training uses


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    if not spec:
        return None
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard '{spec}': expected i/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard '{spec}': need 0 <= i < n")
    return i, n


def plan(cfg: DistillConfig) -> Plan:
    """Everything that can fail on bad input, checked before any model is loaded."""
    task = get_task(cfg.task)
    template = get_template(cfg.template or task.distill_template)
    if "{reference}" not in template.user:
        raise ValueError(f"template '{template.name}' has no {{reference}} field: it cannot be a distillation template")
    columns = cfg.columns if cfg.columns else None
    src = resolve_source(cfg.data, cfg.dataset_dir, columns, cfg.formatting)
    if not src.columns and task.columns and not cfg.columns:
        src = Source(src.path, src.formatting, dict(task.columns), src.tags, src.name)
    examples = load_examples(src)
    if task.normalize_output:
        examples = [Example(e.index, e.instruction, e.input, task.normalize_output(e.output), e.history, e.system)
                    for e in examples]
    checks = [banned_phrases] + [CHECKS[c] for c in task.checks] + [resolve_check(c) for c in cfg.checks]
    if cfg.clean not in CLEANERS:
        raise ValueError(f"--clean '{cfg.clean}': use one of {', '.join(CLEANERS)}")
    if cfg.decoding not in DECODING_PRESETS:
        raise ValueError(f"--decoding '{cfg.decoding}': use one of {', '.join(DECODING_PRESETS)}")
    indices = select_indices(len(examples), subset=cfg.subset, seed=cfg.seed, paper_cut=cfg.paper_cut,
                             limit=cfg.limit, shard=parse_shard(cfg.shard))
    decoding = GenerationParams(**{**DECODING_PRESETS[cfg.decoding].to_dict(), "max_new_tokens": cfg.max_new_tokens,
                                   "seed": cfg.seed, "stop": ()})
    train_template = get_template(cfg.train_template or task.train_template)
    return Plan(cfg, src, task, template, examples, indices, checks, file_sha256(src.path), decoding,
                train_template=train_template)


def fingerprint(cfg: DistillConfig, input_sha256: str) -> dict[str, Any]:
    d = config_fingerprint(cfg)
    d["data"] = input_sha256  # the same data under another path is the same run
    d.pop("dataset_dir", None)
    if d.get("api_model") is None:  # runs made before --api-model existed still resume
        d.pop("api_model", None)
    for key, old in (("frame", "release"), ("train_template", None), ("truncated", "reject")):
        if d.get(key) == old:  # runs made before these options (release frame, truncated rejected) still resume
            d.pop(key, None)
    return d


def _versions(backend: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"sdft": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "xllamacpp", "vllm"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def record_for(ex: Example, completion, decision: Decision, candidates=None) -> dict[str, Any]:
    """One output row. With best-of-n, ``candidates`` lists every sample tried (the last is the one kept)."""
    rec = {"index": ex.index, "instruction": ex.instruction, "input": ex.input, "output": decision.output,
           "original": ex.output, "distilled": completion.text, "accepted": decision.accepted,
           "reason": decision.reason, "finish_reason": completion.finish_reason,
           "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens}
    if candidates is not None:
        rec["candidates"] = [{"text": c.text, "finish_reason": c.finish_reason, "reason": d.reason}
                             for c, d in candidates]
        rec["candidate"] = len(candidates) - 1
        rec["completion_tokens"] = sum(c.completion_tokens for c, _ in candidates)
    if ex.history:
        rec["history"] = [[t.user, t.assistant] for t in ex.history]
    if ex.system:
        rec["system"] = ex.system
    return rec


def export(out: Path, records: list[dict]) -> None:
    """LLaMA-Factory-compatible training sets, in source order."""
    records = sorted(records, key=lambda r: r["index"])

    def rows(target: str) -> list[dict]:
        res = []
        for r in records:
            row = {"instruction": r["instruction"], "input": r["input"], "output": r[target]}
            if r.get("history"):
                row["history"] = r["history"]
            if r.get("system"):
                row["system"] = r["system"]
            res.append(row)
        return res

    atomic_write_json(out / "distilled.json", rows("output"))
    atomic_write_json(out / "original.json", rows("original"))
    cols = {"prompt": "instruction", "query": "input", "response": "output", "history": "history", "system": "system"}
    atomic_write_json(out / "dataset_info.json", {
        "sdft": {"file_name": "distilled.json", "columns": cols},
        "vanilla": {"file_name": "original.json", "columns": cols},
    })


def summarize(records: list[dict]) -> dict[str, Any]:
    by_reason: dict[str, int] = {}
    for r in records:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    n = len(records)
    acc = sum(r["accepted"] for r in records)
    out = {"rows": n, "accepted": acc, "rejected": n - acc, "acceptance_rate": acc / n if n else 0.0,
            "by_reason": dict(sorted(by_reason.items(), key=lambda kv: -kv[1])),
            "prompt_tokens": sum(r.get("prompt_tokens", 0) for r in records),
            "generated_tokens": sum(r.get("completion_tokens", 0) for r in records),
            "truncated": sum(r.get("finish_reason") == "length" for r in records),  # cut off at max_new_tokens
            "truncated_accepted": sum(r.get("finish_reason") == "length" and r["accepted"] for r in records)}
    if any("candidates" in r for r in records):  # best-of-n: acceptance as a function of k
        k_max = max(len(r.get("candidates", [None])) for r in records)
        out["acceptance_at_k"] = {k: sum(r["accepted"] and r.get("candidate", 0) < k for r in records) / n
                                  for k in range(1, k_max + 1)}
    return out


@dataclass
class DistillResult:
    out: Path
    summary: dict[str, Any]
    manifest: dict[str, Any]


def distill(cfg: DistillConfig, *, progress: bool = True, backend=None, tokenizer=None,
            log: Callable[[str], None] = print, deterministic: bool | None = None) -> DistillResult:
    """Run (or resume) a distillation. ``backend``/``tokenizer`` may be passed in (tests, experiments).

    Bad input fails in :func:`plan`, before the output folder exists; the folder is then held by
    :func:`~sdft.store.run_lock` for the whole run (a second process is refused at once). ``deterministic``
    (default: the config's ``deterministic``, else off) asks the backend for bit-reproducible generation
    (one llama.cpp slot, one HF row per forward pass; see docs/reproducibility.md)."""
    p = plan(cfg)
    if deterministic is None:
        deterministic = bool(getattr(cfg, "deterministic", False))
    with run_lock(cfg.out):
        return _distill(cfg, p, progress=progress, backend=backend, tokenizer=tokenizer, log=log,
                        deterministic=deterministic)


def _distill(cfg: DistillConfig, p: Plan, *, progress: bool, backend, tokenizer, log: Callable[[str], None],
             deterministic: bool) -> DistillResult:
    out = Path(cfg.out)
    gen_model: ResolvedModel | None
    gen_model, tokenizer = model_and_tokenizer(cfg.teacher or cfg.model, cfg.cache_dir, cfg.trust_remote_code,
                                               backend, tokenizer, log)
    fmt = resolve_prompt_format(tokenizer, cfg.prompt_format)

    def prompt_of(ex: Example) -> str:  # frame release: the distillation template's prompt, as the authors
        return framed_prompt(cfg.frame, {"instruction": ex.instruction, "input": ex.input, "history": ex.history},
                             ex.output, p.train_template, p.template, prompt_format=fmt, layout=cfg.layout,
                             tokenizer=tokenizer)

    # the backend the measured (auto) settings are measured for; None: a backend passed in, which runs its own
    measured = "auto" in (cfg.weights, cfg.batch_size, cfg.kv_cache) and backend is None and gen_model is not None
    name = pick_backend(cfg.backend, gen_model) if measured else None
    if cfg.weights == "auto":  # measured on this machine (once); the run records the type it chose
        from sdft.generation.tuning import resolve_weights

        cfg = replace(cfg, weights=resolve_weights(cfg, name, gen_model, tokenizer, [
            prompt_of(p.examples[i]) for i in p.indices[:8]], cfg.max_new_tokens, log))
    if "auto" in (cfg.batch_size, cfg.kv_cache):  # measured here (once); run-only, the choice is in config.json
        from sdft.generation.tuning import BATCH_SAMPLE, resolve_batch_size

        batch, chunk, kv = (1, cfg.chunk_size, "dynamic") if deterministic else resolve_batch_size(
            cfg, name, gen_model, [prompt_of(p.examples[i]) for i in p.indices[:BATCH_SAMPLE]], log)
        cfg = replace(cfg, batch_size=batch, chunk_size=chunk, kv_cache=kv)
    fp = fingerprint(cfg, p.input_sha256)
    guard_run_folder(out, fp, cfg.overwrite, [ROWS, MANIFEST, "distilled.json", "original.json", "dataset_info.json"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG, {"fingerprint": fp, "config": to_dict(cfg), "prompt_format": fmt})

    scan = scan_records(out / ROWS)  # a damaged line loses only its row, which is made again below
    for w in scan.warnings(out / ROWS):
        log(f"warning: {w}")
    done = scan.records
    done_idx = {r["index"] for r in done}
    pending = [i for i in p.indices if i not in done_idx]
    examples = p.examples

    sample_prompt = prompt_of(examples[p.indices[0]]) if p.indices else ""
    t_start = time.perf_counter()
    gen_seconds = 0.0
    new_tokens = 0
    status = "complete"
    manifest: dict[str, Any] = {}

    def write_manifest(records: list[dict]) -> dict[str, Any]:
        m = {
            "status": status, "sdft_version": __version__, "config": to_dict(cfg),
            "task": p.task.name, "template": {"name": p.template.name, "system": p.template.system,
                                              "user": p.template.user, "prefill": p.template.prefill},
            "prompt_format": fmt, "layout": cfg.layout, "example_prompt": sample_prompt,
            "model": _model_info(gen_model, cfg), "backend": getattr(backend, "name", cfg.backend),
            "decoding": p.decoding.to_dict(), "input": {"path": str(p.source.path), "sha256": p.input_sha256,
                                                         "rows_in_file": len(examples), "selected": len(p.indices)},
            "checks": [getattr(c, "__name__", str(c)) for c in p.checks], "clean": cfg.clean,
            "frame": cfg.frame, "truncated": cfg.truncated,
            "train_template": None if cfg.frame == "release" else p.train_template.name,
            "counts": summarize(records), "versions": _versions(cfg.backend),
            "rows_file": _rows_file_info(out, scan), "deterministic": deterministic,
            "this_session": {"rows": len(records) - len(done), "seconds": round(time.perf_counter() - t_start, 2),
                             "generated_tokens": new_tokens,
                             "tokens_per_s": round(new_tokens / gen_seconds, 2) if gen_seconds else None},
        }
        atomic_write_json(out / MANIFEST, m)
        return m

    records = list(done)
    if pending:
        if backend is None:
            assert gen_model is not None
            backend = make_backend(pick_backend(cfg.backend, gen_model), gen_model, batch_size=cfg.batch_size,
                                   tokenizer=tokenizer, trust_remote_code=cfg.trust_remote_code, threads=cfg.threads,
                                   weights=cfg.weights, cache_dir=cfg.cache_dir, kv_cache=cfg.kv_cache,
                                   deterministic=deterministic, **server_options(cfg), **executor_options(cfg))
        from sdft.progress import DistillProgress

        bar = DistillProgress(len(p.indices), len(done), sum(r["accepted"] for r in done), enabled=progress)
        try:
            with bar, RecordWriter(out / ROWS) as writer:
                todo = [examples[i] for i in pending]
                prompts = [prompt_of(ex) for ex in todo]
                seeds = [cfg.seed + ex.index for ex in todo]
                clean = CLEANERS[cfg.clean]
                for start, comps, secs in generate_in_chunks(backend, prompts, p.decoding, cfg.chunk_size, seeds,
                                                             per_row=deterministic):
                    gen_seconds += secs
                    chunk = todo[start:start + len(comps)]
                    cands = [[(c, decide(c.text, ex.output, c.finish_reason, p.checks, clean, cfg.allow_empty,
                                        cfg.truncated))]
                             for ex, c in zip(chunk, comps)]
                    for j in range(1, cfg.num_candidates):  # best-of-n: more samples only for rejected rows
                        retry = [k for k, cs in enumerate(cands) if not cs[-1][1].accepted]
                        if not retry:
                            break
                        t0 = time.perf_counter()
                        _, more, _ = next(generate_in_chunks(
                            backend, [prompts[start + k] for k in retry], p.decoding, len(retry),
                            [cfg.seed + 1_000_003 * j + chunk[k].index for k in retry], per_row=deterministic))
                        gen_seconds += time.perf_counter() - t0
                        for k, c in zip(retry, more):
                            cands[k].append((c, decide(c.text, chunk[k].output, c.finish_reason, p.checks, clean,
                                                       cfg.allow_empty, cfg.truncated)))
                    comps = [c for cs in cands for c, _ in cs]
                    new = [record_for(ex, cs[-1][0], cs[-1][1], cs if cfg.num_candidates > 1 else None)
                           for ex, cs in zip(chunk, cands)]
                    writer.write(new)
                    records += new
                    tokens = sum(c.completion_tokens for c in comps)
                    new_tokens += tokens
                    bar.advance(len(new), sum(r["accepted"] for r in new), tokens, gen_seconds, new_tokens)
                    status = "running"
                    write_manifest(records)
        except KeyboardInterrupt:
            status = "interrupted"
            write_manifest(records)
            log(f"interrupted: {len(records)}/{len(p.indices)} rows are saved in {out / ROWS}; "
                "re-run the same command to continue")
            raise
        finally:
            if hasattr(backend, "close") and gen_model is not None:
                backend.close()
    status = "complete"
    export(out, records)
    manifest = write_manifest(records)
    return DistillResult(out, manifest["counts"], manifest)


def _rows_file_info(out: Path, scan: RecordScan) -> dict[str, Any]:
    """What resuming found wrong in rows.jsonl (this session), and how many lines were ever set aside."""
    q = quarantine_path(out / ROWS)
    ever = sum(1 for line in q.read_bytes().splitlines() if line.strip()) if q.exists() else 0
    return {**scan.summary(), "quarantine_file": q.name if ever else None, "quarantined_ever": ever}


def _model_info(model: ResolvedModel | None, cfg: DistillConfig) -> dict[str, Any]:
    info: dict[str, Any] = {"seed_model": cfg.model, "teacher": cfg.teacher}
    if model is not None:
        info.update({"name": model.name, "source": model.source, "hf_dir": str(model.hf_dir),
                     "gguf": str(model.gguf) if model.gguf else None})
    return info
