"""Result tables shared by every scorer (a leaf: no sdft imports)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping


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
        lines.append(f"| {r['task']} | {r['metric']} | {100 * r['score']:.2f}% | {100 * lo:.2f}–{100 * hi:.2f}% "
                     f"| {r['correct']} / {r['n']} |")
    return "\n".join(lines) + "\n"
