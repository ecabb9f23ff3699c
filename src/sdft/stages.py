"""An experiment stage (:mod:`sdft.experiment`): its kind, the hash naming its cached folder, its config and inputs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DONE = "STAGE.json"  # written into a stage's folder when it finished


@dataclass
class Stage:
    kind: str  # distill | gap | train | eval | shift | retention
    key: str  # hash of everything it depends on
    label: str  # human-readable
    config: Any  # the stage's config dataclass (or a dict for gap and shift)
    deps: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # arm, seed, num_samples, mix_ratio, template, frame

    def folder(self, root: Path) -> Path:
        return root / "stages" / f"{self.kind}-{self.key}"

    def done(self, root: Path) -> bool:
        return (self.folder(root) / DONE).exists()


def stage_hash(obj: Any) -> str:
    """The 12 hex digits naming a stage's folder: sha256 of ``obj`` as sorted JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]
