"""``sdft gap``: how far the task data sit from the seed model's own distribution (the paper's thesis).

For every row of a distillation, the seed model's per-token negative log-likelihood of the original response
and of the distilled response, each given the training prompt (the same template code as ``sdft train``):

    NLL(y | x) = −(1/|y|) Σ_t log p(y_t | x, y_<t)      perplexity = exp(NLL)

Aggregates: mean NLL and perplexity per target kind, the mean per-row gap (original − distilled), and the share of
rows where the distilled response is more likely. A large gap predicts more forgetting from vanilla fine-tuning.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

from sdft.store import atomic_write_json, read_json, read_records
from sdft.distillation.tasks import get_task
from sdft.templates import default_prompt_format, get_template
from sdft.training.common import tokenize


def token_nll(model, features: Sequence[dict[str, list[int]]], batch_size: int = 4, pad_id: int = 0) -> list[float]:
    """Mean NLL over the ``completion_mask`` tokens of each feature (right padding, masked by position)."""
    import torch

    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    res: dict[int, float] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(features[i]["input_ids"]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        att = torch.zeros((len(idx), width), dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.bool)
        for row, i in enumerate(idx):
            f = features[i]
            n = len(f["input_ids"])
            ids[row, :n] = torch.tensor(f["input_ids"])
            att[row, :n] = 1
            mask[row, :n] = torch.tensor(f["completion_mask"], dtype=torch.bool)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=att).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        m = mask[:, 1:]
        for row, i in enumerate(idx):
            k = int(m[row].sum())
            res[i] = float(-(logp[row][m[row]]).sum() / k) if k else float("nan")
    return [res[i] for i in range(len(features))]


def gap_features(rows: Sequence[dict], key: str, tokenizer, template, prompt_format: str,
                 layout: str = "standard") -> list[dict[str, list[int]]]:
    """The features of each row's ``key`` target (stripped) after its training prompt: the trainer's own
    tokenization (:func:`sdft.training.common.tokenize`), cut at 4,096 tokens."""
    return tokenize([(r, r[key].strip()) for r in rows], tokenizer, template, prompt_format, layout, 4096)[0]


def _stats(values: list[float]) -> dict[str, float]:
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return {"n": 0}
    mean = statistics.mean(v)
    return {"n": len(v), "mean_nll": mean, "perplexity": math.exp(mean), "median_nll": statistics.median(v)}


def measure_gap(distill_dir: str | Path, *, model: str | None = None, out: str | Path | None = None,
                limit: int | None = None, batch_size: int = 4, cache_dir: str | None = None,
                log: Callable[[str], None] = print, hf_model=None, tokenizer=None, template: str | None = None,
                prompt_format: str = "auto", layout: str = "standard") -> dict[str, Any]:
    """NLL of the seed model on original vs distilled responses of a `sdft distill` folder, each under the
    training prompt: ``template`` (default: the distillation's ``train_template``, else the task's), ``prompt_format``
    and ``layout`` as the training run uses them (the prompt text is :func:`sdft.prompts.training_prompt`)."""
    import contextlib

    from sdft.store import run_lock

    # the distillation folder is another run's: never measure it while a process works in it
    with run_lock(distill_dir) if Path(distill_dir).is_dir() else contextlib.nullcontext():
        return measure_gap_unlocked(distill_dir, model=model, out=out, limit=limit, batch_size=batch_size,
                                    cache_dir=cache_dir, log=log, hf_model=hf_model, tokenizer=tokenizer,
                                    template=template, prompt_format=prompt_format, layout=layout)


def measure_gap_unlocked(distill_dir: str | Path, *, model: str | None = None, out: str | Path | None = None,
                         limit: int | None = None, batch_size: int = 4, cache_dir: str | None = None,
                         log: Callable[[str], None] = print, hf_model=None, tokenizer=None, template: str | None = None,
                         prompt_format: str = "auto", layout: str = "standard") -> dict[str, Any]:
    from sdft.models import load_tokenizer, resolve_model

    d = Path(distill_dir)
    rows = sorted(read_records(d / "rows.jsonl", repair=False), key=lambda r: r["index"])[:limit]
    if not rows:
        raise ValueError(f"{d / 'rows.jsonl'}: no rows")
    dcfg = read_json(d / "config.json")["config"]
    task = get_task(dcfg.get("task", "alpaca"))
    template = get_template(template or dcfg.get("train_template") or task.train_template)
    spec = model or dcfg.get("model", "default")
    if hf_model is None or tokenizer is None:
        import torch
        from transformers import AutoModelForCausalLM

        ref = resolve_model(spec, cache_dir, log=log)
        tokenizer = load_tokenizer(ref, cache_dir=cache_dir)
        hf_model = AutoModelForCausalLM.from_pretrained(str(ref.hf_dir), dtype=torch.float32).eval()
    fmt = default_prompt_format(tokenizer) if prompt_format == "auto" else prompt_format
    feats = {kind: gap_features(rows, key, tokenizer, template, fmt, layout)
             for kind, key in (("original", "original"), ("distilled", "output"))}
    nll = {k: token_nll(hf_model, f, batch_size, tokenizer.pad_token_id or 0) for k, f in feats.items()}
    per_row = [{"index": r["index"], "accepted": r.get("accepted"), "nll_original": a, "nll_distilled": b,
                "gap": a - b} for r, a, b in zip(rows, nll["original"], nll["distilled"])]
    changed = [p for p in per_row if p["accepted"]]
    result = {
        "model": spec, "distillation": str(d), "rows": len(rows), "prompt_format": fmt, "template": template.name,
        "layout": layout, "frame": dcfg.get("frame", "release"),
        "original": _stats(nll["original"]), "distilled": _stats(nll["distilled"]),
        "mean_gap": statistics.mean(p["gap"] for p in per_row),
        "share_distilled_more_likely": sum(p["gap"] > 0 for p in per_row) / len(per_row),
        "accepted_rows": {"n": len(changed), "mean_gap": statistics.mean(p["gap"] for p in changed) if changed else None,
                          "share_distilled_more_likely": (sum(p["gap"] > 0 for p in changed) / len(changed))
                          if changed else None},
        "per_row": per_row,
    }
    if out:
        atomic_write_json(Path(out) / "gap.json", result)
    log(f"seed NLL/token: original {result['original'].get('mean_nll', float('nan')):.3f} "
        f"(ppl {result['original'].get('perplexity', float('nan')):.1f}) vs distilled "
        f"{result['distilled'].get('mean_nll', float('nan')):.3f} (ppl {result['distilled'].get('perplexity', float('nan')):.1f}); "
        f"distilled more likely on {result['share_distilled_more_likely']:.0%} of rows")
    return result
