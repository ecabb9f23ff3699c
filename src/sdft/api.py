"""The Python API: one function per CLI command, taking the same config objects (or a YAML path, or keyword
overrides) and returning result objects. The ``sdft`` command is a thin layer over these.

>>> import sdft
>>> sorted(n for n in sdft.__all__ if not n.startswith("_"))[:4]
['DistillConfig', 'EvalConfig', 'ExperimentConfig', 'TrainConfig']
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from sdft.config import DistillConfig, EvalConfig, TrainConfig

from sdft.options import build, load, to_dict

C = TypeVar("C")
Log = Callable[[str], None]


def _config(cls: type[C], config: C | str | Path | None, overrides: dict[str, Any], section: str) -> C:
    """A config from an instance, a YAML file (its ``section`` or top-level keys) or nothing, with overrides."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(config, cls):
        return build(cls, {**to_dict(config), **given}, "python call") if given else config
    if config is not None and not isinstance(config, (str, Path)):
        raise TypeError(f"config must be a {cls.__name__}, a YAML path or None, not {type(config).__name__}")
    return load(cls, config, given, section=section if config else None)


@dataclass
class EvalResult:
    out: Path
    results: list[dict]  # one per task: score, n, correct, ci95, ...

    def score(self, task: str) -> float:
        return next(r["score"] for r in self.results if r["task"] == task)


def distill(config: DistillConfig | str | Path | None = None, *, progress: bool = False, log: Log = print,
            **overrides: Any):
    """Rewrite every response with the seed model (``sdft distill``); returns a ``DistillResult`` (``out``,
    ``summary``, ``manifest``)."""
    from sdft.distillation.distill import distill as run

    return run(_config(DistillConfig, config, overrides, "distill"), progress=progress, log=log)


def train(config: TrainConfig | str | Path | None = None, *, log: Log = print, **overrides: Any):
    """Fine-tune (``sdft train``); returns a ``TrainResult`` (``out``, ``manifest``)."""
    from sdft.training import train as run

    return run(_config(TrainConfig, config, overrides, "train"), log=log)


def evaluate(config: EvalConfig | str | Path | None = None, *, progress: bool = False, log: Log = print,
             **overrides: Any) -> EvalResult:
    """Generate and score benchmark answers (``sdft eval``)."""
    from sdft.evaluation.evaluate import evaluate as run

    cfg = _config(EvalConfig, config, overrides, "eval")
    return EvalResult(Path(cfg.out), run(cfg, progress=progress, log=log))


def score(task: str, predictions: str | Path, out: str | Path, data: str | Path | None = None, *,
          task_data: Sequence[str] = (), task_files: Sequence[str | Path] = (), id_column: str | None = None,
          sandbox: str | None = None) -> dict:
    """Score another system's outputs with the same scorers (``sdft score``); ``task_data`` entries
    ``TASK=PATH[:COLUMNS]`` and ``task_files`` (YAML task definitions) as in ``sdft eval``, ``id_column`` to key
    predictions by a data column, ``sandbox`` how HumanEval programs run: ``"bwrap"`` | ``"guard"`` (``None``:
    the sandbox's default, bwrap)."""
    from sdft.evaluation.scoring import score_predictions

    return score_predictions(task, predictions, out, data, task_data=tuple(task_data), task_files=tuple(task_files),
                             id_column=id_column, sandbox=sandbox)


def judge_check(judge: str, out: str | Path, *, n: int = 20, mode: str = "both", backend: str = "auto",
                prompt: str | Path | None = None, seed: int = 0, threads: int | None = None,
                cache_dir: str | Path | None = None, log: Log = print) -> dict:
    """Check a judge on probe pairs with known verdicts (``sdft judge-check``) in ``mode`` generate, logprob or
    both (one model load); returns the content of ``out/judge_check.json``."""
    from sdft.evaluation.judge import make_judge
    from sdft.evaluation.judge_check import judge_check_modes
    from sdft.evaluation.judge_logprob import JUDGE_MODES, with_mode

    modes = JUDGE_MODES if mode == "both" else (mode,)
    if any(m not in JUDGE_MODES for m in modes):
        raise ValueError(f"--mode {mode}: use generate, logprob or both")
    base = make_judge(judge, backend, prompt=prompt, cache_dir=cache_dir, threads=threads, log=log)
    try:
        judges = {m: with_mode(base, m) for m in modes}
        return judge_check_modes(judges, n=n, seed=seed, out_dir=out, log=log)
    finally:
        getattr(base.backend, "close", lambda: None)()


def export_lm_eval(out: str | Path, tasks: Sequence[str] | None = None, *, model: str | None = None,
                   prompt_format: str = "auto", layout: str = "standard", limit: int | None = None,
                   max_new_tokens: int | None = None, task_data: Sequence[str] = (), cache_dir: str | None = None,
                   log: Log = print) -> dict:
    """Write lm-eval task YAMLs, JSONL docs and a self-contained utils.py for our benchmarks (``sdft
    export-lm-eval``); returns ``{task: {lm_eval_task, yaml, data, n}}``."""
    from sdft.evaluation.lm_eval_export import DEFAULT_TASKS, export_lm_eval as run

    return run(out, tuple(tasks) if tasks else DEFAULT_TASKS, model=model, prompt_format=prompt_format,
               layout=layout, limit=limit, max_new_tokens=max_new_tokens, task_data=tuple(task_data),
               cache_dir=cache_dir, log=log)


def gap(data: str | Path, *, model: str | None = None, out: str | Path | None = None, limit: int | None = None,
        batch_size: int = 4, template: str | None = None, prompt_format: str = "auto", layout: str = "standard",
        log: Log = print) -> dict:
    """Seed-model NLL of the original vs the distilled targets of a distillation folder under the training prompt
    (``sdft gap``; ``template``/``prompt_format``/``layout`` as the training run uses them)."""
    from sdft.distillation.gap import measure_gap

    return measure_gap(data, model=model, out=out or data, limit=limit, batch_size=batch_size, template=template,
                       prompt_format=prompt_format, layout=layout, log=log)


def load_experiment(config: str | Path, **overrides: Any):
    """An ``ExperimentConfig`` from its YAML file, with overrides (e.g. ``out=``)."""
    from sdft.experiment import load_experiment as load_exp

    return load_exp(config, overrides)


def run_experiment(config: Any, *, dry_run: bool = False, progress: bool = False, log: Log = print,
                   executor: str | None = None, ray_address: str | None = None, estimate: bool = False,
                   gpus: int = 1, throughput: str | dict | None = None, **overrides: Any) -> Path:
    """Run a whole comparison as cached stages and write its report (``sdft experiment``); returns the report's
    path (the output folder with ``dry_run``). ``config``: an ``ExperimentConfig`` or its YAML path.
    ``executor`` (local | ray | slurm) and ``ray_address`` override the config's ``executor:`` section;
    ``estimate``: a dry run that also logs the cost plan on ``gpus`` GPUs (:func:`estimate_cost`)."""
    from sdft.experiment import ExperimentConfig, run_experiment as run

    if isinstance(config, ExperimentConfig):
        cfg = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    else:
        cfg = load_experiment(config, **overrides)
    where = {k: v for k, v in (("kind", executor), ("address", ray_address)) if v is not None}
    if where:
        cfg = replace(cfg, executor={**cfg.executor, **where})
    out = run(cfg, dry_run=dry_run or estimate, progress=progress, log=log)
    if estimate:
        log(estimate_cost(cfg, gpus=gpus, throughput=throughput).markdown())
    return out


def estimate_cost(config: Any, *, gpus: int = 1, throughput: str | dict | None = None, **overrides: Any):
    """The cost plan of an experiment (``sdft experiment --dry-run --estimate``): per stage the tokens to generate
    and to train on, wall time and GPU-hours on ``gpus`` GPUs; ``throughput`` e.g. ``"gen=2500,train=3000"``
    (tokens/s per GPU; default: the shipped table). Returns a :class:`sdft.estimate.CostPlan`."""
    from sdft.estimate import estimate_plan
    from sdft.experiment import ExperimentConfig

    cfg = config if isinstance(config, ExperimentConfig) else load_experiment(config, **overrides)
    return estimate_plan(cfg, gpus=gpus, throughput=throughput)


def report(run: str | Path) -> Path:
    """(Re)write an experiment's report (``sdft report``); returns the markdown report's path."""
    from sdft.reporting.report import write_report

    if not (Path(run) / "experiment.json").exists():
        raise FileNotFoundError(f"{run}: not an experiment folder (no experiment.json)")
    return write_report(run)
