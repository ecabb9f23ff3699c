"""The retention stages of an experiment (:mod:`sdft.experiment`, :mod:`sdft.evaluation.retention`): the seed
model's greedy answers to the retention tasks' prompts and their NLL under the seed model (the baseline), then
under every trained arm (base + adapter), each a cached stage like the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdft.options import ConfigError, hashable
from sdft.stages import Stage, stage_hash

RETENTION_KEYS = {"tasks", "task", "max_tokens", "limit", "task_limits", "batch_size"}


def retention_settings(cfg: Any, where: str = "experiment") -> dict[str, Any]:
    """The ``retention`` section with its defaults: tasks, max_tokens (64), limit and task_limits (the eval's)."""
    r = cfg.retention or {}
    if not isinstance(r, dict):
        raise ConfigError(f"{where} [retention]: expected a mapping with tasks and max_tokens")
    bad = sorted(set(r) - RETENTION_KEYS)
    if bad:
        raise ConfigError(f"{where} [retention]: unknown key(s) {', '.join(bad)}; known: "
                          f"{', '.join(sorted(RETENTION_KEYS))}")
    tasks = r.get("tasks", r.get("task", "advbench-direct"))
    tasks = tuple(tasks.split(",")) if isinstance(tasks, str) else tuple(tasks)
    from sdft.evaluation.benchmarks import get_eval_task

    try:
        [get_eval_task(t) for t in tasks]
    except ValueError as e:
        raise ConfigError(f"{where} [retention]: {e}") from None
    limits = cfg.eval.get("task_limits") or {}
    return {"tasks": tasks, "max_tokens": int(r.get("max_tokens", 64)), "limit": r.get("limit", cfg.eval.get("limit")),
            "task_limits": dict(r.get("task_limits", {t: limits[t] for t in tasks if t in limits})),
            "batch_size": int(r.get("batch_size", 8))}


def retention_stages(cfg: Any, stages: list[Stage], root: Path) -> list[Stage]:
    """The seed model's answers and their NLL under the seed (the baseline), then under every trained arm."""
    from sdft.evaluation.retention import RetentionConfig

    trains = [s for s in stages if s.kind == "train"]
    if cfg.retention is None or not trains:
        return []
    r = retention_settings(cfg)
    gen = {k: cfg.eval[k] for k in ("backend", "prompt_format", "layout", "threads") if k in cfg.eval}
    values = {**r, **gen, "model": cfg.model, "cache_dir": cfg.cache_dir}
    hashed = hashable(RetentionConfig, values)  # run-only options (batch size, threads, cache) left out

    def stage(key: str, label: str, deps: list[str], meta: dict, **paths: Any) -> Stage:
        st = Stage("retention", key, label, None, deps, meta)
        st.config = RetentionConfig(out=str(st.folder(root)), **values, **paths)
        return st

    seed = stage(stage_hash({"retention": hashed}), "retention seed model", [], {"arm": "seed"})
    out = [seed]
    for tr in trains:
        out.append(stage(stage_hash({"retention": hashed, "answers": seed.key, "train": tr.key}),
                         f"retention {tr.label[6:]}", [seed.key, tr.key], tr.meta,
                         adapter=str(tr.folder(root)), answers=str(seed.folder(root))))
    return out
