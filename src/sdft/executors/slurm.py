"""The ``slurm`` executor: each pending stage is one submitit job (``pip install sdft[slurm]``).

The driver (this process, holding the experiment's run lock) submits a stage as soon as every stage it depends
on is done, so independent stages run side by side, with ``executor.max_parallel`` jobs in flight at most. Each
job asks for its stage kind's resources: ``partition``, ``time_min`` (or ``time_min_per_stage``),
``gpus_per_stage`` (no GPUs unless set: a SLURM partition's GPUs are the user's to name), ``cpus_per_stage``,
``mem_gb_per_stage``, and any further submitit parameter under ``slurm:`` (``slurm_account``, ``slurm_qos``,
``slurm_constraint``, ``slurm_additional_parameters``...). ``cluster: local`` runs the very same path through
submitit's local executor (one subprocess per job, no SLURM): what the tests use.

A job that ends without a result (killed, preempted, timed out, node failure) is resubmitted up to
``max_retries`` times and resumes inside its stage; a stage that raised is not (its error is raised at the end,
after the stages that do not need it have finished). Job pickles and logs go to ``executor.folder``
(default ``<out>/submitit``), on the shared filesystem like ``out`` itself (docs/scaling-out.md).
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from sdft.executors.common import (ExecutorSpec, RunStage, describe, local_cpus, pending, ready, run_in_worker,
                                   stage_cpus, stage_gpus)


class StageFailed(RuntimeError):
    """A stage raised inside its job; the message holds the job's traceback."""


def job_main(run: RunStage, stage: Any, root: str, by_key: dict, cwd: str | None) -> dict:
    """What one job runs. A stage's own error comes back as a result (so it is never mistaken for a killed job
    and resubmitted); a job that dies returns nothing, which the driver reads as 'resubmit'."""
    try:
        return run_in_worker(run, stage, root, by_key, cwd)
    except Exception as e:  # noqa: BLE001 - carried back to the driver, raised there
        return {"error": repr(e), "exception": e, "traceback": traceback.format_exc()}


class SubmititExecutor:
    kind = "slurm"

    def __init__(self, spec: ExecutorSpec):
        self.spec = spec

    def _executor(self, root: Path) -> Any:
        import submitit

        folder = Path(self.spec.folder) if self.spec.folder else root / "submitit"
        return submitit.AutoExecutor(folder=str(folder / "%j"), cluster=self.spec.cluster)

    def parameters(self, kind: str) -> dict[str, Any]:
        """The submitit parameters of a job for a stage of ``kind``."""
        s = self.spec
        p: dict[str, Any] = dict(name=f"sdft-{kind}", nodes=1, tasks_per_node=1,
                                 timeout_min=int(s.time_min_per_stage.get(kind, s.time_min)),
                                 cpus_per_task=int(stage_cpus(s, kind)), gpus_per_node=int(stage_gpus(s, kind, False)))
        if kind in s.mem_gb_per_stage:
            p["mem_gb"] = float(s.mem_gb_per_stage[kind])
        if s.partition:
            p["slurm_partition"] = s.partition
        p.update(s.slurm)
        return p

    def run(self, stages: Sequence[Any], root: Path, run: RunStage, *, by_key: dict[str, Any],
            log: Callable[[str], None], progress: bool) -> tuple[int, int]:
        todo = pending(stages, root)
        cached = len(stages) - len(todo)
        if not todo:
            return 0, cached
        ex = self._executor(root)
        limit = self.spec.max_parallel or (None if ex.cluster == "slurm" else local_cpus())
        log(f"submitit: cluster {ex.cluster}, jobs in {ex.folder.parent}"
            + (f", at most {limit} at once" if limit else ""))
        return self._run(ex, todo, root, run, by_key, log, limit), cached

    def _run(self, ex: Any, todo: list, root: Path, run: RunStage, by_key: dict, log: Callable[[str], None],
             limit: int | None) -> int:
        from submitit.core.utils import FailedJobError

        waiting = list(todo)
        unfinished = {s.key for s in todo}
        running: dict[str, tuple[Any, int]] = {}
        failed: dict[str, BaseException] = {}
        ran = 0
        cwd = os.getcwd()

        def submit(st: Any, attempt: int) -> None:
            ex.update_parameters(**self.parameters(st.kind))
            job = ex.submit(job_main, run, st, str(root), by_key, cwd)
            running[st.key] = (job, attempt)
            again = f", attempt {attempt + 1}" if attempt else ""
            log(f"submitted {st.kind}: {st.label} (job {job.job_id}{again})")

        try:
            while waiting or running:
                for st in ready(waiting, unfinished):
                    if any(d in failed for d in st.deps):
                        waiting.remove(st)
                        unfinished.discard(st.key)
                        failed[st.key] = StageFailed(f"{st.label}: not run, a stage it needs failed")
                        log(f"not run {st.kind}: {st.label} (a stage it needs failed)")
                    elif limit is None or len(running) < limit:
                        waiting.remove(st)
                        submit(st, 0)
                for key, (job, attempt) in list(running.items()):
                    if not job.done():
                        continue
                    st = by_key[key]
                    del running[key]
                    err = job.exception()
                    if err is not None and not isinstance(err, FailedJobError) and attempt < self.spec.max_retries:
                        log(f"job {job.job_id} of {st.kind} {st.label} ended without a result; resubmitting")
                        submit(st, attempt + 1)
                        continue
                    unfinished.discard(key)
                    rec = _result(job) if err is None else {"error": str(err)}
                    if "error" in rec:
                        failed[key] = rec.get("exception") or StageFailed(f"{st.label}: {rec['error']}")
                        log(f"failed {st.kind}: {st.label}: {rec['error']}\n{rec.get('traceback', '')}")
                        continue
                    ran += 0 if rec.get("skipped") else 1
                    log(f"done {st.kind}: {st.label} ({describe(rec)})")
                if waiting or running:
                    time.sleep(self.spec.poll_s)
        except KeyboardInterrupt:
            for job, _ in running.values():
                job.cancel(check=False)
            raise
        if failed:
            raise failed[next(s.key for s in todo if s.key in failed)]
        return ran


def _result(job: Any) -> dict:
    try:
        return job.result()
    except Exception as e:  # noqa: BLE001 - e.g. an exception that cannot be unpickled here
        return {"error": f"{type(e).__name__}: {e}"}
