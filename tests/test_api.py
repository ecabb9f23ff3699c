"""The tiny pipeline through the Python API alone: distill -> train -> evaluate -> experiment report."""

from __future__ import annotations

import json

import sdft


def test_the_pipeline_runs_through_the_api(tmp_path, tiny_model_dir):
    data = tmp_path / "gsm.json"
    data.write_text(json.dumps([{"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2 * i}\nThe answer is "
                                 f"{2 * i}."} for i in range(1, 5)]))
    d = sdft.distill(data=str(data), out=str(tmp_path / "d"), task="gsm8k", model=str(tiny_model_dir), backend="hf",
                     decoding="greedy", max_new_tokens=4, log=lambda m: None)
    assert d.summary["rows"] == 4 and (d.out / "distilled.json").exists()
    cfg = sdft.TrainConfig(data=str(d.out), out=str(tmp_path / "t"), model=str(tiny_model_dir), max_steps=1,
                           per_device_batch_size=2, gradient_accumulation_steps=1)
    t = sdft.train(cfg, log=lambda m: None)
    assert t.manifest["steps"] == 1 and (t.out / "adapter_config.json").exists()
    e = sdft.evaluate(out=str(tmp_path / "e"), tasks="gsm8k", model=str(tiny_model_dir), adapter=str(t.out),
                      backend="hf", limit=2, max_new_tokens=4, log=lambda m: None)
    assert e.results[0]["n"] == 2 and 0.0 <= e.score("gsm8k") <= 1.0
    assert json.loads((tmp_path / "e" / "results.json").read_text())


def test_experiment_and_report_through_the_api(tmp_path, tiny_model_dir):
    from test_experiment import write_cfg

    p = write_cfg(tmp_path, tiny_model_dir, methods=["seed", "sdft"], shift_task=None, gap=False,
                  eval={"tasks": ["gsm8k"], "limit": 2, "backend": "hf", "max_new_tokens": 4})
    cfg = sdft.load_experiment(p)
    assert sdft.run_experiment(cfg, dry_run=True, log=lambda m: None) == tmp_path / "exp"
    report = sdft.run_experiment(p, log=lambda m: None)
    assert report.exists()
    assert sdft.report(tmp_path / "exp") == report
