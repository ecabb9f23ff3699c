"""The run-only options that spread ``sdft distill`` / ``sdft eval`` generation over a Ray cluster, one set for
both configs (a frozen keyword-only mixin of :class:`sdft.config.DistillConfig` and
:class:`sdft.config.EvalConfig`; the field metadata is :func:`sdft.config.opt`'s). They never change a result:
left out of run fingerprints and stage hashes (a run may be continued with another executor)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdft.options import opt


def _opt(default: Any, help: str, **more: Any) -> Any:
    return opt(default, help, run_only=True, **more)


@dataclass(frozen=True, kw_only=True)
class ScaleOptions:
    executor: str = _opt("local", "where generation runs: local (this process) | ray (a Ray Data pipeline: vLLM's "
                         "processor for --backend vllm, else an actor pool of the backend; docs/scaling-out.md)",
                         choices=("local", "ray"))
    ray_address: str | None = _opt(None, "--executor ray: the cluster to join, e.g. auto or ray://head:10001 "
                                   "(default: a running one, else a local one)")
    concurrency: int | None = _opt(None, "--executor ray: generation replicas (actors or vLLM engines; default: one "
                                   "per GPU of the cluster, else 1)", min=1)
