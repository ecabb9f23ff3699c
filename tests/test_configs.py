"""Every shipped config loads into its frozen dataclass (an unknown key would be an error)."""

from pathlib import Path

import pytest
import yaml

from sdft.config import DistillConfig, TrainConfig

from sdft.options import load

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


PAPER = sorted((Path(__file__).resolve().parents[1] / "configs" / "paper").glob("*.yaml"))


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.name)
def test_paper_configs_are_full_experiments_whose_dry_run_passes(path):
    """configs/paper/*.yaml: seed / vanilla / SDFT and the fair arms, the paper's tasks, an executor section; the
    placeholder model lets --dry-run check every input here."""
    from sdft.executors import executor_spec
    from sdft.experiment import load_experiment, plan, run_experiment

    cfg = load_experiment(path)
    assert {"seed", "vanilla", "sdft", "vanilla-fair", "sdft-fair"} <= set(cfg.methods)
    assert {"gsm8k", "openfunctions", "humaneval", "advbench", "advbench-jailbreak", "alpacaeval"} <= set(cfg.eval["tasks"])
    assert executor_spec(cfg.executor).gpus_per_stage["train"] == 1
    assert "set to your Llama-2-7b-chat-hf folder" in path.read_text()
    assert {s.kind for s in plan(cfg)} >= {"distill", "gap", "train", "eval", "shift"}
    run_experiment(cfg, dry_run=True, log=lambda m: None)


def test_paper_sweeps_and_template_ablation():
    from sdft.experiment import load_experiment

    of = load_experiment(PAPER[[p.stem for p in PAPER].index("openfunctions")])
    assert of.num_samples and of.mix_ratios and set(of.templates) == {"using", "refer"}  # Figs. 5-8, Table 4
    assert set(load_experiment(PAPER[[p.stem for p in PAPER].index("dolly")]).templates) == {"using", "refer"}
