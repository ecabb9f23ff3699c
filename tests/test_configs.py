"""Every shipped config loads into its frozen dataclass (an unknown key would be an error)."""

from pathlib import Path

import pytest
import yaml

from sdft.config import DistillConfig, TrainConfig, load

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("**/*.yaml"))
SECTIONS = {"distill": DistillConfig, "train": TrainConfig}


EXPERIMENTS = [p for p in CONFIGS if "methods" in (yaml.safe_load(p.read_text()) or {})]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_configs_load_and_plan(path):
    from sdft.experiment import load_experiment, plan

    stages = plan(load_experiment(path))
    assert {s.kind for s in stages} >= {"distill", "train", "eval"}


@pytest.mark.parametrize("path", [p for p in CONFIGS if "accelerate" not in p.parts and p not in EXPERIMENTS],
                         ids=lambda p: p.name)
def test_shipped_configs_load(path):
    doc = yaml.safe_load(path.read_text())
    assert set(doc) <= set(SECTIONS)
    for section in doc:
        cfg = load(SECTIONS[section], path, section=section)
        assert cfg.out


def test_accelerate_configs_are_yaml():
    acc = [p for p in CONFIGS if "accelerate" in p.parts]
    assert len(acc) >= 3
    for p in acc:
        assert "distributed_type" in yaml.safe_load(p.read_text())
