"""Should a win rate be believed? A judged result carries ``judge_trusted`` and the reasons when it is not.

A win rate is flagged (``judge_trusted: false``, ``judge_untrusted_reasons``) when

- the judge named the same position in at least 90% of its decisive verdicts on this very run (at least 10 of
  them): the score then mostly measures position bias; or
- ``sdft judge-check`` was run on the *same* judge (same fingerprint: model, backend, prompt file, format,
  decoding and mode) and failed it (agreement below 75% on a probe with a known winner, a strong position bias,
  or a probe without any parseable verdict).

``sdft judge-check`` records each checked judge as ``<cache>/judge-checks/<fingerprint>.json`` (the cache is
``--cache-dir``, default ``~/.cache/sdft/models``); the results then say ``judge_check: {passed, agreement,
file}``, or ``null`` when this judge was never checked (which alone is not a flag).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from sdft.evaluation.judge import POSITION_WARN
from sdft.store import atomic_write_json, read_json


def register_check(checks_dir: Optional[Path], fingerprint: str, entry: Mapping[str, Any]) -> Optional[Path]:
    """Record a judge-check result under the judge's fingerprint (nothing without a ``checks_dir``)."""
    if checks_dir is None:
        return None
    path = Path(checks_dir) / f"{fingerprint}.json"
    atomic_write_json(path, dict(entry))
    return path


def find_check(checks_dir: Optional[Path], fingerprint: str) -> Optional[dict]:
    """The recorded judge-check result of this judge, or None."""
    if checks_dir is None:
        return None
    path = Path(checks_dir) / f"{fingerprint}.json"
    if not path.is_file():
        return None
    try:
        found = read_json(path)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def trust(stats: Mapping[str, Any], judge: Any) -> dict:
    """``judge_trusted``, ``judge_untrusted_reasons`` and ``judge_check`` for a judged result's statistics."""
    reasons = []
    pos, decisive = stats.get("first_position_rate"), stats.get("decisive_judgements") or 0
    if pos is not None and decisive >= 10 and abs(pos - 0.5) >= POSITION_WARN:
        reasons.append(f"position bias: the judge named the {'first' if pos > 0.5 else 'second'} answer in "
                       f"{max(pos, 1 - pos):.0%} of its {decisive} decisive verdicts")
    check = find_check(getattr(judge, "checks_dir", None), judge.fingerprint())
    summary = None
    if check is not None:
        summary = {k: check.get(k) for k in ("passed", "agreement", "file")}
        if not check.get("passed"):
            agree = check.get("agreement")
            reasons.append(f"the judge failed `sdft judge-check` (overall agreement "
                           f"{'n/a' if agree is None else f'{agree:.0%}'}; {check.get('file')})")
    return {"judge_trusted": not reasons, "judge_untrusted_reasons": reasons, "judge_check": summary}
