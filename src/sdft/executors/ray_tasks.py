"""The ``ray`` executor: each pending stage is one Ray task (``pip install sdft[ray]``).

A task asks for its stage's resources (``executor.gpus_per_stage`` / ``cpus_per_stage`` / ``mem_gb_per_stage``;
by default 1 GPU for distill, gap, train and eval where the cluster has GPUs, 1 CPU otherwise) and receives the
tasks of the stages it depends on as arguments, so Ray starts it only once they are done and runs independent
stages side by side. ``--ray-address`` (``executor.address``) joins a running cluster; without it a local one is
started with ``num_cpus`` CPUs and shut down at the end.

A worker that dies mid-stage (killed, out of memory, node lost) is retried up to ``max_retries`` times; the retry
resumes inside the stage (distillation and evaluation rows and training checkpoints are on disk). A stage that
raises is not retried (the same input would fail again); stages that need it are not run, the others go on, and
the first error is raised at the end; a re-run continues from the stage cache. Stage outputs go to the
experiment's ``out`` folder, which every node must see at the same path (docs/scaling-out.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from sdft.executors.common import (ExecutorSpec, RunStage, describe, local_cpus, pending, run_in_worker, stage_cpus,
                                   stage_gpus)

LOCAL_OBJECT_STORE = 1 << 30  # a local cluster moves configs and small records, never tensors


def stage_task(run: RunStage, stage: Any, root: str, by_key: dict, cwd: str | None, *after: Any) -> dict:
    """The Ray task of one stage. ``after``: the results of the stages it depends on (only waited for)."""
    return run_in_worker(run, stage, root, by_key, cwd)


class RayExecutor:
    kind = "ray"

    def __init__(self, spec: ExecutorSpec):
        self.spec = spec

    def connect(self, log: Callable[[str], None]) -> bool:
        """Join ``spec.address`` or start a local cluster unless Ray is already up; True if this call started
        it (then :meth:`run` shuts it down)."""
        import ray

        if ray.is_initialized():
            return False
        s = self.spec
        env = s.runtime_env or None
        if s.address:
            ray.init(address=s.address, runtime_env=env, log_to_driver=True)
        else:
            ray.init(num_cpus=s.num_cpus or local_cpus(), num_gpus=s.num_gpus, include_dashboard=False,
                     object_store_memory=LOCAL_OBJECT_STORE, runtime_env=env, log_to_driver=True)
        res = ray.cluster_resources()
        log(f"ray: {'joined ' + s.address if s.address else 'local cluster'}: {res.get('CPU', 0):g} CPUs, "
            f"{res.get('GPU', 0):g} GPUs, {len(ray.nodes())} node(s)")
        return True

    def run(self, stages: Sequence[Any], root: Path, run: RunStage, *, by_key: dict[str, Any],
            log: Callable[[str], None], progress: bool) -> tuple[int, int]:
        todo = pending(stages, root)
        cached = len(stages) - len(todo)
        if not todo:
            return 0, cached
        import ray

        started = self.connect(log)
        try:
            return self._run(ray, todo, root, run, by_key, log), cached
        finally:
            if started:
                ray.shutdown()

    def _options(self, kind: str, gpus_total: float) -> dict[str, Any]:
        from sdft.options import ConfigError

        s = self.spec
        gpus = stage_gpus(s, kind, gpus_total > 0)
        if gpus > gpus_total:
            raise ConfigError(f"executor: a {kind} stage asks for {gpus:g} GPU(s) but the Ray cluster has "
                              f"{gpus_total:g}; lower executor.gpus_per_stage.{kind} or join a GPU cluster")
        opts: dict[str, Any] = dict(num_cpus=stage_cpus(s, kind), num_gpus=gpus, max_retries=s.max_retries,
                                    retry_exceptions=False)
        if kind in s.mem_gb_per_stage:
            opts["memory"] = int(float(s.mem_gb_per_stage[kind]) * (1 << 30))
        return opts

    def _run(self, ray: Any, todo: list, root: Path, run: RunStage, by_key: dict, log: Callable[[str], None]) -> int:
        gpus_total = float(ray.cluster_resources().get("GPU", 0))
        task = ray.remote(stage_task)
        shared = ray.put(by_key)
        cwd = os.getcwd()
        refs: dict[str, Any] = {}
        for i, st in enumerate(todo, 1):
            after = [refs[d] for d in st.deps if d in refs]
            refs[st.key] = task.options(name=f"sdft-{st.kind}-{st.key}", **self._options(st.kind, gpus_total)) \
                .remote(run, st, str(root), shared, cwd, *after)
            log(f"[{i}/{len(todo)}] submitted {st.kind}: {st.label}" + (f" (after {len(after)})" if after else ""))
        left = {ref: key for key, ref in refs.items()}
        failed: dict[str, BaseException] = {}
        ran = 0
        try:
            while left:
                done, _ = ray.wait(list(left), num_returns=1)
                for ref in done:
                    st = by_key[left.pop(ref)]
                    try:
                        rec = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        upstream = [d for d in st.deps if d in failed]
                        failed[st.key] = _cause(e)
                        log(f"not run {st.kind}: {st.label} (a stage it needs failed)" if upstream else
                            f"failed {st.kind}: {st.label}: {failed[st.key]}")
                        continue
                    ran += 0 if rec.get("skipped") else 1
                    log(f"done {st.kind}: {st.label} ({describe(rec)})")
        except KeyboardInterrupt:
            for ref in left:
                ray.cancel(ref, force=True)
            raise
        if failed:
            first = next(k for k in refs if k in failed)
            raise failed[first]
        return ran


def _cause(e: BaseException) -> BaseException:
    """The stage's own exception inside a Ray error (its type, so the CLI reports it as it would locally)."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e
