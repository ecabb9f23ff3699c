"""Result tables shared by every scorer (a leaf: no sdft imports)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

UNTRUSTED_MARK = "⚠ judge failed its check: win rate not evidence"


def judge_marker(result: Mapping[str, Any]) -> str:
    """A visible flag after a win rate whose judge is not trusted (``judge_trusted: false``), else nothing.

    >>> judge_marker({"judge_trusted": False}), judge_marker({"score": 1.0})
    (' ⚠ judge failed its check: win rate not evidence', '')
    """
    return f" {UNTRUSTED_MARK}" if result.get("judge_trusted") is False else ""


def results_markdown(results: Iterable[Mapping[str, Any]]) -> str:
    """A markdown table of one or more results (percentages with their 95% Wilson interval).

    >>> print(results_markdown([{"task": "gsm8k", "metric": "accuracy", "score": 0.5, "n": 100,
    ...                          "correct": 50, "ci95": [0.4038, 0.5962]}]))
    | task | metric | score | 95% CI | correct / n |
    |---|---|---|---|---|
    | gsm8k | accuracy | 50.00% | 40.38–59.62% | 50 / 100 |
    <BLANKLINE>
    """
    lines = ["| task | metric | score | 95% CI | correct / n |", "|---|---|---|---|---|"]
    for r in results:
        lo, hi = r["ci95"]
        lines.append(f"| {r['task']} | {r['metric']} | {100 * r['score']:.2f}%{judge_marker(r)} | "
                     f"{100 * lo:.2f}–{100 * hi:.2f}% | {_count(r['correct'])} / {r['n']} |")
    return "\n".join(lines) + "\n"


def _count(k: Any) -> Any:
    return round(k, 2) if isinstance(k, float) else k  # judged pairs sum probabilities in logprob mode
