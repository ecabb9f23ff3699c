"""The ``local`` executor: every pending stage in this process, one after another, in plan order (the default;
exactly the loop ``sdft experiment`` always ran)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from sdft.executors.common import RunStage, finish_stage


class LocalExecutor:
    kind = "local"

    def __init__(self, spec: Any = None):
        self.spec = spec

    def run(self, stages: Sequence[Any], root: Path, run: RunStage, *, by_key: dict[str, Any],
            log: Callable[[str], None], progress: bool) -> tuple[int, int]:
        ran = cached = 0
        for i, st in enumerate(stages, 1):
            if st.done(root):
                cached += 1
                continue
            log(f"[{i}/{len(stages)}] running {st.kind}: {st.label}")
            finish_stage(run, st, root, by_key, log, progress)
            ran += 1
        return ran, cached
