"""Where the stages of ``sdft experiment`` run (``--executor``, or the config's ``executor: {kind: ...}``):

- ``local`` (default): in this process, one after another (:mod:`sdft.executors.local`);
- ``ray``: each stage a Ray task with its resources (GPUs for model stages where the cluster has them), started
  as soon as the stages it depends on are done, so independent stages run in parallel; a worker that dies is
  retried (:mod:`sdft.executors.ray_tasks`; ``pip install sdft[ray]``);
- ``slurm``: each stage a submitit job (SLURM, or submitit's local executor without SLURM), submitted when its
  dependencies are done, resubmitted when killed (:mod:`sdft.executors.slurm`; ``pip install sdft[slurm]``).

Every executor runs the same stage function (the experiment's, which writes ``STAGE.json``) and never a done
stage; Ray and submitit are imported only when chosen. docs/scaling-out.md has the shared-storage requirements.
"""

from __future__ import annotations

from typing import Any

from sdft.executors.common import KINDS, Executor, ExecutorSpec, executor_spec

__all__ = ["KINDS", "Executor", "ExecutorSpec", "executor_spec", "make_executor"]


def make_executor(values: dict[str, Any] | ExecutorSpec | None, where: str = "executor") -> Executor:
    """The executor of an experiment's ``executor:`` mapping (validated; nothing is started or imported yet)."""
    spec = executor_spec(values, where)
    if spec.kind == "ray":
        from sdft.executors.ray_tasks import RayExecutor

        return RayExecutor(spec)
    if spec.kind == "slurm":
        from sdft.executors.slurm import SubmititExecutor

        return SubmititExecutor(spec)
    from sdft.executors.local import LocalExecutor

    return LocalExecutor(spec)
