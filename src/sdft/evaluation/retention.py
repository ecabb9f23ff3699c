"""Retention: how likely a fine-tuned model still finds the seed model's own answers (a continuous, paired measure).

For each evaluation prompt x of a task and the seed model's greedy answer y to it, the per-token negative
log-likelihood of the first K tokens of y under the model being measured (base + adapter), teacher-forced:

    NLL_K(y | x) = −(1/k) Σ_{t<k} log p(y_t | x, y_<t),   k = min(K, |y|)

The seed model scores its own answers low; fine-tuning that moves the model away from them raises it. Two arms are
compared per prompt (:func:`paired`, :func:`sdft.stats.paired_difference`): the mean difference with a bootstrap
interval and a Wilcoxon signed-rank p-value. It sits beside the safe rate and accuracy, never instead of them.

Folders: the seed model's run (``answers`` unset) first writes ``<out>/<task>/answers.jsonl`` (index, prompt, output,
finish_reason; greedy, K new tokens, resumable); every run writes ``<out>/retention.json`` (per prompt: index,
NLL, tokens scored; per task: n, mean and median NLL). ``answers`` may also be a ``sdft eval`` folder: its
``<task>/generations.jsonl`` (prompt + output per item) is read (greedy eval decoding gives the seed's own answers).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from sdft.options import opt
from sdft.store import RecordWriter, atomic_write_json, read_json, read_records

ANSWERS, RESULT = "answers.jsonl", "retention.json"


@dataclass(frozen=True)
class RetentionConfig:
    """The retention measure of one model (the seed model, or the seed model + an adapter)."""

    out: str = opt(help="output folder (answers.jsonl per task for the seed model, retention.json)", run_only=True)
    model: str = opt("default", "the seed model: its own answers are scored under it + `adapter`")
    adapter: str | None = opt(None, "a `sdft train` folder (LoRA adapter or full model); None: the seed model itself")
    answers: str | None = opt(None, "a folder with the seed's answers per task; None: generate them into `out`")
    tasks: tuple[str, ...] = opt(("advbench-direct",), "evaluation tasks whose prompts are used")
    max_tokens: int = opt(64, "K: the first K tokens of each answer are generated and scored", min=1)
    limit: int | None = opt(None, "the first N prompts of each task", min=1)
    task_limits: dict = opt(help="per-task override of `limit`", factory=dict)
    backend: str = opt("auto", "generation backend of the seed's answers (as `sdft eval`)")
    prompt_format: str = opt("auto", "auto | chat | raw (as `sdft eval`)")
    layout: str = opt("standard", "raw prompt format only: standard | release")
    batch_size: int = opt(8, "prompts per generate call and per NLL forward pass", run_only=True, min=1)
    chunk_size: int = opt(16, "answers per durable write", run_only=True, min=1)
    threads: int | None = opt(None, "CPU threads for generation", run_only=True)
    cache_dir: str | None = opt(None, "model cache folder", run_only=True)
    trust_remote_code: bool = opt(False, "allow model code from the model folder")


def seed_answers(cfg: RetentionConfig, *, backend=None, tokenizer=None, log: Callable[[str], None] = print) -> Path:
    """The seed model's greedy answers (``max_tokens`` new tokens) to each task's evaluation prompts, written to
    ``<out>/<task>/answers.jsonl`` (resumable). No judge and no scoring: any task with prompts works."""
    from sdft.evaluation.benchmarks import get_eval_task
    from sdft.generation import DECODING_PRESETS, generate_in_chunks, make_backend, pick_backend
    from sdft.models import model_and_tokenizer
    from sdft.templates import resolve_prompt_format

    out = Path(cfg.out)
    model, tokenizer = model_and_tokenizer(cfg.model, cfg.cache_dir, cfg.trust_remote_code, backend, tokenizer, log)
    fmt = resolve_prompt_format(tokenizer, cfg.prompt_format)
    try:
        for name in cfg.tasks:
            task = get_eval_task(name)
            samples = task.load()[: cfg.task_limits.get(name, cfg.limit)]
            path = out / name / ANSWERS
            done = {r["index"] for r in read_records(path, warn=lambda w: log(f"warning: {w}"))}
            todo = [s for s in samples if s.index not in done]
            if not todo:
                continue
            if backend is None:
                backend = make_backend(pick_backend(cfg.backend, model), model, batch_size=cfg.batch_size,
                                       tokenizer=tokenizer, trust_remote_code=cfg.trust_remote_code,
                                       threads=cfg.threads)
            params = replace(DECODING_PRESETS["greedy"], max_new_tokens=cfg.max_tokens, stop=tuple(task.stop))
            prompts = [task.prompt(s, prompt_format=fmt, tokenizer=tokenizer, layout=cfg.layout) for s in todo]
            with RecordWriter(path) as writer:
                for start, comps, _ in generate_in_chunks(backend, prompts, params, cfg.chunk_size):
                    writer.write([{"index": s.index, "prompt": p, "output": c.text, "finish_reason": c.finish_reason}
                                  for s, p, c in zip(todo[start:], prompts[start:], comps)])
            log(f"retention: the seed model's answers to {len(samples)} {name} prompts → {path}")
    finally:
        if backend is not None and model is not None and hasattr(backend, "close"):
            backend.close()
    return out


def load_answers(folder: str | Path, task: str, limit: int | None = None) -> list[dict]:
    """The seed's answers to one task (``index``, ``prompt``, ``output``) in index order: ``answers.jsonl``, else a
    ``sdft eval`` folder's ``generations.jsonl``."""
    base = Path(folder) / task
    for name in (ANSWERS, "generations.jsonl"):
        if (base / name).exists():
            rows = sorted(read_records(base / name, repair=False), key=lambda r: r["index"])
            return rows[:limit]
    raise FileNotFoundError(f"{base}: no {ANSWERS} or generations.jsonl (the seed model's answers to {task})")


def answer_features(answers: Sequence[dict], tokenizer, max_tokens: int) -> list[dict[str, list[int]]]:
    """Prompt + the first ``max_tokens`` tokens of each answer (no eos), the answer tokens masked in."""
    from sdft.prompts import encode

    feats = []
    for a in answers:
        p_ids, t_ids = encode(a["prompt"], a["output"], tokenizer, eos=False, max_target_tokens=max_tokens)
        feats.append({"input_ids": p_ids + t_ids, "completion_mask": [0] * len(p_ids) + [1] * len(t_ids)})
    return feats


def load_scoring_model(model_dir: str | Path, adapter: str | Path | None = None, trust_remote_code: bool = False):
    """The seed model in float32 for teacher forcing, with a PEFT adapter (or a full fine-tune's folder)."""
    import torch
    from transformers import AutoModelForCausalLM

    if adapter is not None and not (Path(adapter) / "adapter_config.json").exists():
        model_dir, adapter = adapter, None  # a full fine-tune: the folder is the model
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                                 trust_remote_code=trust_remote_code)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval()


def measure_retention(cfg: RetentionConfig, *, hf_model=None, tokenizer=None, backend=None,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """Per-prompt NLL of the seed's answers under ``cfg.model`` + ``cfg.adapter``; writes ``retention.json``."""
    from sdft.distillation.gap import token_nll
    from sdft.models import load_tokenizer, resolve_model

    if cfg.answers is None:
        seed_answers(cfg, backend=backend, tokenizer=tokenizer, log=log)
    answers_dir = Path(cfg.answers or cfg.out)
    if hf_model is None or tokenizer is None:
        ref = resolve_model(cfg.model, cfg.cache_dir, log=log)
        tokenizer = tokenizer or load_tokenizer(ref, cfg.trust_remote_code, cfg.cache_dir)
        hf_model = hf_model or load_scoring_model(ref.hf_dir, cfg.adapter, cfg.trust_remote_code)
    tasks = {}
    for name in cfg.tasks:
        answers = load_answers(answers_dir, name, cfg.task_limits.get(name, cfg.limit))
        feats = answer_features(answers, tokenizer, cfg.max_tokens)
        nll = token_nll(hf_model, feats, cfg.batch_size, tokenizer.pad_token_id or 0)
        per = [{"index": a["index"], "nll": v, "tokens": sum(f["completion_mask"])}
               for a, f, v in zip(answers, feats, nll)]
        vals = [p["nll"] for p in per if not math.isnan(p["nll"])]
        tasks[name] = {"per_prompt": per, "summary": {
            "n": len(vals), "mean_nll": statistics.mean(vals) if vals else None,
            "median_nll": statistics.median(vals) if vals else None}}
        if vals:
            log(f"retention {name}: the seed's answers, NLL/token {statistics.mean(vals):.3f} over {len(vals)} "
                f"prompts (first {cfg.max_tokens} tokens)")
    result = {"model": cfg.model, "adapter": cfg.adapter, "answers": str(answers_dir), "max_tokens": cfg.max_tokens,
              "tasks": tasks}
    atomic_write_json(Path(cfg.out) / RESULT, result)
    return result


def per_prompt(result: dict | str | Path, task: str) -> dict[int, float]:
    """``index → NLL`` of one task of a retention result (or its folder); prompts without tokens left out."""
    if not isinstance(result, dict):
        result = read_json(Path(result) / RESULT)
    rows = result.get("tasks", {}).get(task, {}).get("per_prompt", [])
    return {r["index"]: r["nll"] for r in rows if r["nll"] is not None and not math.isnan(r["nll"])}


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """``b − a`` per prompt over the prompts both hold (:func:`sdft.stats.paired_difference`) plus the
    differences themselves (``diffs``, in index order)."""
    from sdft.stats import paired_difference

    common = sorted(set(a) & set(b))
    res = paired_difference([a[i] for i in common], [b[i] for i in common])
    return {**res, "diffs": [b[i] - a[i] for i in common], "index": common}
