"""How far can a judge be trusted? Its agreement on AlpacaEval pairs whose right verdict is known.

For a seeded random subset of the 805 instructions, each reference answer R is paired with a candidate C whose
verdict is known, and the pair is judged exactly as :mod:`sdft.evaluation.judge` judges a model (both orders, C in the
model's place). Probes:

- ``truncated``: C = the first 15% of R's words (at least one word) — R should win;
- ``empty``: C = "" — R should win;
- ``offtopic``: C = the reference answer of a different instruction (the next one in the shuffled subset, so never
  its own) — R should win;
- ``self``: C = R — a tie. Both orders then send the *same* prompt, so a deterministic judge answers the same
  position twice and scores 0.5: this probe checks that verdicts parse and that a judge that does prefer a
  position is cancelled by the two orders, not the judge's taste.

Per pair, ``agreement`` is the known-better answer's pair score (1: right in both orders; 0.5: right in one,
i.e. position-driven; 0: wrong in both); for ``self`` it is 1 when the pair scores exactly 0.5. ``strict`` is the
share of pairs right in both orders. A pair with an unparseable verdict is left out and counted. ``overall``
pools all counted pairs. ``first_position_rate`` (share of non-tie verdicts naming Output (a)) shows position
bias: 0.5 is none, 1.0 means the judge always picks the first answer (and every real pair would score 0.5).
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from sdft.evaluation.benchmarks import Sample
from sdft.evaluation.judge import ORDERS, POSITION_WARN, Judge, judge_pairs
from sdft.stats import wilson_interval
from sdft.store import atomic_write_json

TRUNCATE_SHARE = 0.15
TRUST_THRESHOLD = 0.75  # agreement on a known-winner probe below this is flagged (0.5 = chance)


def truncate_words(text: str, share: float = TRUNCATE_SHARE) -> str:
    """The first ``share`` of the words (rounded up, at least one).

    >>> truncate_words("one two three four five six seven eight nine ten")
    'one two'
    """
    words = text.split()
    return " ".join(words[:max(1, math.ceil(share * len(words)))]) if words else ""


# probe name -> (candidate from (reference, another reference), expected: "reference" wins or "tie")
PROBES: dict[str, tuple[Callable[[str, str], str], str]] = {
    "truncated": (lambda ref, other: truncate_words(ref), "reference"),
    "empty": (lambda ref, other: "", "reference"),
    "offtopic": (lambda ref, other: other, "reference"),
    "self": (lambda ref, other: ref, "tie"),
}


def build_probes(samples: Sequence[Sample], n: int = 20, seed: int = 0,
                 probes: Sequence[str] = tuple(PROBES)) -> list[dict]:
    """Probe pairs (``index`` = ``"<probe>:<row>"``) for ``n`` seeded random samples."""
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe(s) {unknown}; available: {', '.join(PROBES)}")
    chosen = random.Random(seed).sample(list(samples), min(n, len(samples)))
    pairs = []
    for probe in probes:
        make, _ = PROBES[probe]
        for k, s in enumerate(chosen):
            other = chosen[(k + 1) % len(chosen)].gold if len(chosen) > 1 else ""
            pairs.append({"index": f"{probe}:{s.index}", "probe": probe, "instruction": s.instruction,
                          "model": make(s.gold or "", other or ""), "reference": s.gold or ""})
    return pairs


def agreement(prefs: Sequence[float | None], expected: str) -> float | None:
    """Agreement of one pair with the known verdict (None if a verdict did not parse).

    >>> agreement([0.0, 0.0], "reference"), agreement([1.0, 0.0], "reference"), agreement([1.0, 0.0], "tie")
    (1.0, 0.5, 1.0)
    """
    if any(p is None for p in prefs):
        return None
    score = sum(prefs) / len(prefs)  # the candidate's pair score
    return 1.0 - score if expected == "reference" else float(score == 0.5)


def _stats(values: Sequence[float], strict: int, unparseable: int) -> dict:
    n, total = len(values), sum(values)
    return {"accuracy": total / n if n else None, "strict": strict / n if n else None, "n": n,
            "ci95": list(wilson_interval(total, n)), "unparseable_pairs": unparseable}


def judge_check(judge: Judge, samples: Sequence[Sample] | None = None, *, n: int = 20, seed: int = 0,
                probes: Sequence[str] = tuple(PROBES), out_dir: str | Path | None = None,
                log: Callable[[str], None] = print) -> dict:
    """Run the probes with ``judge``; returns (and with ``out_dir`` writes ``judge_check.json``) per-probe and
    overall agreement. ``samples`` default to the shipped AlpacaEval set. Verdicts are resumable under
    ``out_dir/judge-<fingerprint>/``."""
    if samples is None:
        from sdft.evaluation.benchmarks.alpacaeval import load

        samples = load()
    pairs = build_probes(samples, n, seed, probes)
    out = Path(out_dir) if out_dir else None
    t0 = time.perf_counter()
    judged = judge_pairs(judge, pairs, out / f"judge-{judge.fingerprint()}" / "check_judgements.jsonl" if out else None)
    seconds = time.perf_counter() - t0
    per: dict[str, dict] = {}
    pooled, pooled_strict, pooled_bad = [], 0, 0
    for probe in probes:
        expected = PROBES[probe][1]
        recs = [j for j, p in zip(judged, pairs) if p["probe"] == probe]
        vals = [a for a in (agreement(r["preferences"], expected) for r in recs) if a is not None]
        strict = sum(v == 1.0 for v in vals)
        bad = len(recs) - len(vals)
        per[probe] = {"expected": expected, **_stats(vals, strict, bad)}
        pooled += vals
        pooled_strict += strict
        pooled_bad += bad
    first = [(p == 1.0) == (o == "model_first") for r in judged for o, p in zip(ORDERS, r["preferences"])
             if p in (0.0, 1.0)]
    position = sum(first) / len(first) if first else None
    result = {"probes": per, "overall": _stats(pooled, pooled_strict, pooled_bad), "first_position_rate": position,
              "warnings": _warnings(per, position),
              "n_instructions": min(n, len(samples)), "seed": seed, "judge": judge.identity(),
              "judge_seconds": round(seconds, 2), "examples": _examples(judged, pairs)}
    for probe, s in per.items():
        acc = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.0%}"
        log(f"judge check {probe}: agreement {acc} (n={s['n']}, unparseable pairs {s['unparseable_pairs']})")
    if out:
        atomic_write_json(out / "judge_check.json", result)
    return result


def _warnings(per: Mapping[str, dict], position: float | None) -> list[str]:
    """Plain-language flags: a strong position preference, or known-winner probes answered near chance."""
    out = []
    if position is not None and abs(position - 0.5) >= POSITION_WARN:
        out.append(f"the judge named the {'first' if position > 0.5 else 'second'} answer in "
                   f"{max(position, 1 - position):.0%} of its verdicts (position bias)")
    known = [v for v in per.values() if v["expected"] == "reference" and v["accuracy"] is not None]
    if known and min(v["accuracy"] for v in known) < TRUST_THRESHOLD:
        weak = [p for p, v in per.items() if v in known and v["accuracy"] < TRUST_THRESHOLD]
        out.append(f"agreement below {TRUST_THRESHOLD:.0%} on probes with a known winner ({', '.join(weak)}; 50% is "
                   f"chance): do not trust this judge's win rates")
    if any(v["n"] == 0 for v in per.values()):
        out.append("some probes have no parseable verdict at all: check the judge prompt and decoding")
    return out


def _examples(judged: Sequence[Mapping], pairs: Sequence[Mapping], per_probe: int = 2) -> list[dict]:
    """A few raw verdicts per probe, for the report (what the judge actually wrote)."""
    seen: dict[str, int] = {}
    out = []
    for j, p in zip(judged, pairs):
        if seen.get(p["probe"], 0) < per_probe:
            seen[p["probe"]] = seen.get(p["probe"], 0) + 1
            out.append({"pair": p["index"], **{o: j["judgements"][o]["raw"] for o in ORDERS}})
    return out
