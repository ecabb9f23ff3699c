"""sdft: Self-Distillation Fine-Tuning (Yang et al., ACL 2024) — distill, train, evaluate, compare, report.

The Python API mirrors the CLI (``sdft.distill``, ``sdft.train``, ``sdft.evaluate``, ``sdft.run_experiment``,
``sdft.reporting.report``, ...); heavy libraries are imported only when a function runs.
"""

from sdft.api import (EvalResult, distill, evaluate, gap, load_experiment, report, run_experiment, score, train)
from sdft.config import DistillConfig, EvalConfig, TrainConfig
from sdft.version import __version__


def __getattr__(name: str):
    if name == "ExperimentConfig":  # lives with the experiment planner
        from sdft.experiment import ExperimentConfig

        return ExperimentConfig
    raise AttributeError(name)


__all__ = ["DistillConfig", "EvalConfig", "EvalResult", "ExperimentConfig", "TrainConfig", "__version__", "distill",
           "evaluate", "gap", "load_experiment", "report", "run_experiment", "score", "train"]
