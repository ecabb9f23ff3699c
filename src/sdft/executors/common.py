"""What every executor shares: the ``executor:`` settings of an experiment, per-stage resources, the DAG's
readiness rule, and the function a worker runs for one stage.

The stage cache stays the single source of truth, whichever executor runs the stages: a stage is done iff its
folder holds ``STAGE.json``, written by :func:`finish_stage` (the experiment's ``run_stage`` plus that mark: the
one stage function of the local loop, a Ray task and a submitit job alike); an executor never starts a done
stage, and a worker re-checks before it starts (a retried task or a resubmitted job may find its stage finished
by an earlier attempt). Everything here is importable without Ray or submitit.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

from sdft.options import build

KINDS = ("local", "ray", "slurm")
DONE_FILE = "STAGE.json"  # = sdft.experiment.DONE (a test checks): a stage's folder holds it once it finished
GPU_KINDS = ("distill", "train", "eval", "gap")  # stages that load a model; shift and the report are CPU work
RunStage = Callable[..., None]  # sdft.experiment.run_stage(stage, root, by_key, log, progress)


@dataclass(frozen=True)
class ExecutorSpec:
    """The ``executor:`` mapping of an experiment YAML (every key optional; ``--executor``/``--ray-address``
    override ``kind``/``address``)."""

    kind: str = "local"
    # ray
    address: str | None = None  # join this cluster ("auto", "ray://head:10001"); none: start a local one
    num_cpus: int | None = None  # size of a local Ray cluster (default: the CPUs this process may use)
    num_gpus: int | None = None  # GPUs of a local Ray cluster (default: Ray's detection)
    runtime_env: dict = field(default_factory=dict)  # ray.init(runtime_env=...), e.g. {env_vars: {HF_HOME: ...}}
    # resources per stage kind (distill, gap, train, eval, shift); GPU stages default to 1 GPU where there are GPUs
    gpus_per_stage: dict = field(default_factory=dict)
    cpus_per_stage: dict = field(default_factory=dict)  # default 1
    mem_gb_per_stage: dict = field(default_factory=dict)  # slurm --mem; ray: memory reservation
    max_retries: int = 2  # a worker or job that dies mid-stage is retried this often (the stage resumes inside)
    # slurm (submitit)
    cluster: str | None = None  # submitit cluster: none = slurm where sbatch exists, else local; or local | debug
    folder: str | None = None  # submitit's job folder (pickles, logs); default <out>/submitit
    partition: str | None = None
    time_min: int = 24 * 60  # wall-time limit of one stage's job
    time_min_per_stage: dict = field(default_factory=dict)
    slurm: dict = field(default_factory=dict)  # more submitit parameters, e.g. {slurm_account: x, slurm_qos: y}
    max_parallel: int | None = None  # jobs in flight at once (default: unlimited on slurm, the CPUs on local)
    poll_s: float = 2.0  # how often the driver looks at its jobs


def executor_spec(values: dict[str, Any] | ExecutorSpec | None, where: str = "executor") -> ExecutorSpec:
    """An :class:`ExecutorSpec` from the YAML mapping (unknown keys and kinds are errors naming ``where``)."""
    if isinstance(values, ExecutorSpec):
        return values
    from sdft.options import ConfigError

    spec = build(ExecutorSpec, dict(values or {}), where)
    if spec.kind not in KINDS:
        raise ConfigError(f"{where}: 'kind' is {spec.kind!r}; use one of {', '.join(KINDS)}")
    for name in ("gpus_per_stage", "cpus_per_stage", "mem_gb_per_stage", "time_min_per_stage"):
        bad = sorted(set(getattr(spec, name)) - {"distill", "gap", "train", "eval", "shift"})
        if bad:
            raise ConfigError(f"{where}: {name}: unknown stage kind(s) {', '.join(bad)}; use distill, gap, train, "
                              "eval, shift")
    return spec


def stage_gpus(spec: ExecutorSpec, kind: str, have_gpus: bool) -> float:
    """GPUs one stage of ``kind`` asks for: the configured number, else 1 for model stages where GPUs exist."""
    if kind in spec.gpus_per_stage:
        return float(spec.gpus_per_stage[kind])
    return 1.0 if have_gpus and kind in GPU_KINDS else 0.0


def stage_cpus(spec: ExecutorSpec, kind: str) -> float:
    return float(spec.cpus_per_stage.get(kind, 1))


class Executor(Protocol):
    def run(self, stages: Sequence[Any], root: Path, run: RunStage, *, by_key: dict[str, Any],
            log: Callable[[str], None], progress: bool) -> tuple[int, int]:
        """Run every pending stage of ``stages`` (plan order is a dependency order) through :func:`finish_stage`
        with ``run``; return (ran, cached)."""
        ...


def pending(stages: Sequence[Any], root: Path) -> list[Any]:
    return [s for s in stages if not s.done(root)]


def ready(todo: Iterable[Any], unfinished: set[str]) -> list[Any]:
    """The stages of ``todo`` none of whose dependencies is still unfinished."""
    return [s for s in todo if not any(d in unfinished for d in s.deps)]


def finish_stage(run: RunStage, stage: Any, root: Path, by_key: dict[str, Any], log: Callable[[str], None],
                 progress: bool) -> dict:
    """Run one stage with ``run`` and mark it done; returns the ``STAGE.json`` record, which says when and where
    it ran (``started``/``ended``: Unix times; ``host``, ``pid``)."""
    from sdft.store import atomic_write_json

    if stage.kind not in {"distill", "train", "eval"}:  # these make (and lock) their own folder
        stage.folder(root).mkdir(parents=True, exist_ok=True)
    started, t0 = time.time(), time.perf_counter()
    run(stage, root, by_key, log, progress)
    rec = {"kind": stage.kind, "key": stage.key, "label": stage.label, "meta": stage.meta,
           "seconds": round(time.perf_counter() - t0, 1), "started": round(started, 3), "ended": round(time.time(), 3),
           "host": socket.gethostname(), "pid": os.getpid()}
    atomic_write_json(stage.folder(root) / DONE_FILE, rec)
    return rec


def run_in_worker(run: RunStage, stage: Any, root: str, by_key: dict[str, Any], cwd: str | None = None) -> dict:
    """What a Ray task or a submitit job runs: :func:`finish_stage` for one stage, in the driver's working
    directory (so
    relative paths of the config mean the same on every node of a shared filesystem). A stage found done (an
    earlier attempt finished it) is not run again; its record is returned."""
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    root_p = Path(root)
    if stage.done(root_p):
        return {"kind": stage.kind, "key": stage.key, "label": stage.label, "skipped": True}

    def log(msg: str) -> None:
        print(f"[{stage.kind} {stage.key} @ {socket.gethostname()}:{os.getpid()}] {msg}", flush=True)

    return finish_stage(run, stage, root_p, by_key, log, False)


def local_cpus() -> int:
    """The CPUs this process may use (its affinity, e.g. under taskset or a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def describe(record: dict) -> str:
    where = record.get("host", "?")
    return f"{record.get('seconds', 0):.0f}s on {where}" + (" (already done)" if record.get("skipped") else "")
