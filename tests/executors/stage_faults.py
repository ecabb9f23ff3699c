"""A stage function for executor tests, importable by Ray workers and submitit jobs (the test puts this folder on
their PYTHONPATH): it runs :func:`sdft.experiment.run_stage`, except that the first distillation it meets runs
only part of its rows and then kills its own worker process, as a node failure or an OOM kill would."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

FLAG = "killed-once"


def run_stage_killing_once(stage, root, by_key, log, progress):
    from sdft.experiment import run_stage

    flag = Path(root) / FLAG
    if stage.kind == "distill" and not flag.exists():
        from sdft.distillation.distill import distill

        distill(replace(stage.config, limit=3), progress=False, log=log)  # 3 of the rows reach rows.jsonl
        flag.write_text(str(os.getpid()))
        os._exit(1)  # the worker dies mid-stage: no STAGE.json, the lock released by the kernel
    run_stage(stage, root, by_key, log, progress)
