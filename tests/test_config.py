"""Each option is described once, on its config field: the CLI, the run-only set, validation and docs/options.md
are derived from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sdft.cli import app
from sdft.config import BACKEND_CHOICES, DECODING_CHOICES, TRAIN_METHODS, DistillConfig, EvalConfig, TrainConfig
from sdft.options import ConfigError, build, fingerprint, load, meta, run_only

ROOT = Path(__file__).resolve().parents[1]


def test_docs_options_table_is_fresh():
    from sdft.docs_tables import render

    assert (ROOT / "docs" / "options.md").read_text(encoding="utf-8") == render(), \
        "docs/options.md is stale: run `python -m sdft.docs_tables`"


def test_every_field_has_help_and_every_cli_flag_exists():
    for cls, cmd in ((DistillConfig, "distill"), (TrainConfig, "train"), (EvalConfig, "eval")):
        text = CliRunner().invoke(app, [cmd, "--help"], env={"COLUMNS": "300"}).output
        for f in dataclasses.fields(cls):
            m = meta(f)
            assert m["help"], f"{cls.__name__}.{f.name} has no help"
            if m["cli"]:
                assert f"--{(m['flag'] or f.name).replace('_', '-')}" in text, (cmd, f.name)


def test_booleans_read_naturally():
    text = CliRunner().invoke(app, ["distill", "--help"], env={"COLUMNS": "300"}).output
    assert "--progress" in text and "--no-progress" in text and "--no-no-" not in text


def test_choices_mirror_the_registries():
    from sdft.generation import BACKENDS, DECODING_PRESETS
    from sdft.training import METHODS

    assert set(METHODS) == set(TRAIN_METHODS)
    assert set(BACKEND_CHOICES) == set(BACKENDS) | {"auto"}
    assert set(DECODING_CHOICES) == set(DECODING_PRESETS)


def test_run_only_is_defined_once():
    import subprocess

    hits = subprocess.run(["grep", "-rn", "RUN_ONLY\\s*=\\|run_only\\s*=\\s*{", str(ROOT / "src")],
                          capture_output=True, text=True).stdout
    assert hits == ""
    assert {"batch_size", "threads", "cache_dir", "out"} <= run_only(DistillConfig)
    assert {"save_steps", "cpu_malloc", "cache_dir"} <= run_only(TrainConfig)
    assert {"batch_size", "workers", "threads"} <= run_only(EvalConfig)


def test_bad_values_fail_fast_naming_section_and_key(tmp_path):
    with pytest.raises(ConfigError, match="'limit' must be at least 1"):
        build(DistillConfig, {"data": "d", "out": "o", "limit": -3})
    with pytest.raises(ConfigError, match="'subset' must be at least 1"):
        build(DistillConfig, {"data": "d", "out": "o", "subset": 0})
    with pytest.raises(ConfigError, match=r"'backend' is 'gpu'; use one of auto"):
        build(EvalConfig, {"out": "o", "backend": "gpu"})
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"train": {"data": "d", "out": "o", "learning_rat": 1}}))
    with pytest.raises(ConfigError, match=r"c.yaml \[train\]: unknown key\(s\) learning_rat"):
        load(TrainConfig, p, section="train")


def test_yaml_with_a_byte_order_mark_loads(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump({"data": "d", "out": "o", "seed": 3}).encode().replace(b"\n", b"\r\n"))
    assert load(DistillConfig, p).seed == 3


def test_cli_prints_errors_literally_with_a_clear_exit(tmp_path):
    r = CliRunner().invoke(app, ["train", "--data", "[bold]x[/bold] [red]", "--out", str(tmp_path / "o"),
                                 "--method", "vanilla", "--model", "[nope]"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["distill", "--data", "x", "--out", str(tmp_path / "o"), "--limit", "-3"])
    assert r.exit_code == 2 and "'limit' must be at least 1" in r.output and not (tmp_path / "o").exists()


def test_run_only_changes_leave_fingerprints_alone():
    a = build(EvalConfig, {"out": "o"})
    b = build(EvalConfig, {"out": "elsewhere", "batch_size": 3, "workers": 2, "threads": 1, "cache_dir": "/c"})
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(build(EvalConfig, {"out": "o", "seed": 1}))


def test_a_late_option_at_its_default_keeps_old_fingerprints():
    cfg = DistillConfig(data="d", out="o")
    assert "weights" not in fingerprint(cfg)  # folders made before --weights existed still resume
    assert fingerprint(dataclasses.replace(cfg, weights="f16"))["weights"] == "f16"  # any other value is compared
    assert meta(next(f for f in dataclasses.fields(EvalConfig) if f.name == "weights"))["late"]
