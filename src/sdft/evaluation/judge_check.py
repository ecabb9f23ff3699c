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
pools all counted pairs. ``first_position_rate`` (share of decisive verdicts naming Output (a)) shows position
bias: 0.5 is none, 1.0 means the judge always picks the first answer (and every real pair would score 0.5).
Intervals are Wilson's (``ci95``), with the pair scores summed as successes.

**Modes.** The same probes can be judged by generated verdicts (``generate``) and by verdict-token
probabilities (``logprob``, :mod:`sdft.evaluation.judge_logprob`); there a pair's agreement is the probability
the judge gives the right answer, averaged over both orders, and "right in an order" means above 0.5.
``judge_check.json`` holds ``modes: {mode: result}``; each result has ``passed`` (no probe with a known winner
below 75%, no position bias of 90% or more, every probe with a parseable verdict) and the judge's
``fingerprint``; with both modes, ``mode_agreement`` is the share of decisive per-order verdicts on which the two
modes pick the same answer. Each checked judge is also recorded for :mod:`sdft.evaluation.judge_trust`, which
flags a win rate from a judge that failed.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from sdft.evaluation.benchmarks import Sample
from sdft.evaluation.judge import ORDERS, POSITION_WARN, Judge, first_position, judge_pairs
from sdft.evaluation.judge_trust import register_check
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
    >>> agreement([0.3, 0.7], "tie"), round(agreement([0.2, 0.4], "reference"), 6)
    (1.0, 0.7)
    """
    if any(p is None for p in prefs):
        return None
    score = sum(prefs) / len(prefs)  # the candidate's pair score
    return 1.0 - score if expected == "reference" else float(abs(score - 0.5) < 1e-9)


def strictly_right(prefs: Sequence[float], expected: str) -> bool:
    """Right in both orders: the reference preferred in each (below 0.5), or an exact tie.

    >>> strictly_right([0.0, 0.4], "reference"), strictly_right([0.0, 0.6], "reference")
    (True, False)
    """
    if expected == "reference":
        return all(p < 0.5 for p in prefs)
    return agreement(prefs, expected) == 1.0


def _stats(values: Sequence[float], strict: int, unparseable: int) -> dict:
    n, total = len(values), sum(values)
    return {"accuracy": total / n if n else None, "strict": strict / n if n else None, "n": n,
            "ci95": list(wilson_interval(total, n)), "unparseable_pairs": unparseable}


def judge_check(judge: Judge, samples: Sequence[Sample] | None = None, *, n: int = 20, seed: int = 0,
                probes: Sequence[str] = tuple(PROBES), out_dir: str | Path | None = None,
                log: Callable[[str], None] = print) -> dict:
    """Run the probes with ``judge`` (either mode); returns per-probe and overall agreement (and with ``out_dir``
    writes ``judge_check.json`` with this one mode). ``samples`` default to the shipped AlpacaEval set. Verdicts
    are resumable under ``out_dir/judge-<fingerprint>/``."""
    return judge_check_modes({getattr(judge, "mode", "generate"): judge}, samples, n=n, seed=seed, probes=probes,
                             out_dir=out_dir, log=log)["modes"][getattr(judge, "mode", "generate")]


def judge_check_modes(judges: Mapping[str, Judge], samples: Sequence[Sample] | None = None, *, n: int = 20,
                      seed: int = 0, probes: Sequence[str] = tuple(PROBES), out_dir: str | Path | None = None,
                      log: Callable[[str], None] = print) -> dict:
    """The probes judged by each ``{mode: judge}`` (e.g. generate and logprob on one model): ``{"modes": {mode:
    result}, "passed", "mode_agreement", ...}``, written to ``out_dir/judge_check.json``; each judge's result is
    also recorded under its fingerprint in its ``checks_dir``."""
    if samples is None:
        from sdft.evaluation.benchmarks.alpacaeval import load

        samples = load()
    pairs = build_probes(samples, n, seed, probes)
    out = Path(out_dir) if out_dir else None
    results, judged = {}, {}
    for mode, judge in judges.items():
        results[mode], judged[mode] = _check_one(judge, pairs, probes, out, log, mode)
        results[mode]["n_instructions"] = min(n, len(samples))
        results[mode]["seed"] = seed
    report = {"modes": results, "passed": all(r["passed"] for r in results.values()),
              "n_instructions": min(n, len(samples)), "seed": seed}
    if len(judged) == 2:
        report["mode_agreement"] = mode_agreement(*judged.values())
    file = out / "judge_check.json" if out else None
    if file:
        atomic_write_json(file, report)
    for mode, judge in judges.items():
        r = results[mode]
        register_check(getattr(judge, "checks_dir", None), r["fingerprint"],
                       {"passed": r["passed"], "agreement": r["overall"]["accuracy"], "mode": mode,
                        "file": str(file.resolve()) if file else None, "first_position_rate": r["first_position_rate"],
                        "probes": {p: v["accuracy"] for p, v in r["probes"].items()}, "judge": r["judge"]})
    return report


def mode_agreement(a: Sequence[Mapping], b: Sequence[Mapping]) -> dict:
    """How often two modes' per-order preferences pick the same answer (orders where both are decisive)."""
    same = total = 0
    for ra, rb in zip(a, b):
        for pa, pb in zip(ra["preferences"], rb["preferences"]):
            if pa is None or pb is None or pa == 0.5 or pb == 0.5:
                continue
            total += 1
            same += (pa > 0.5) == (pb > 0.5)
    return {"rate": same / total if total else None, "agree": same, "n": total,
            "ci95": list(wilson_interval(same, total))}


def _check_one(judge: Judge, pairs: list[dict], probes: Sequence[str], out: Path | None,
               log: Callable[[str], None], mode: str) -> tuple[dict, list[dict]]:
    t0 = time.perf_counter()
    judged = judge_pairs(judge, pairs, out / f"judge-{judge.fingerprint()}" / "check_judgements.jsonl" if out else None)
    seconds = time.perf_counter() - t0
    per: dict[str, dict] = {}
    pooled, pooled_strict, pooled_bad = [], 0, 0
    for probe in probes:
        expected = PROBES[probe][1]
        recs = [j for j, p in zip(judged, pairs) if p["probe"] == probe]
        vals = [a for a in (agreement(r["preferences"], expected) for r in recs) if a is not None]
        strict = sum(strictly_right(r["preferences"], expected) for r in recs if None not in r["preferences"])
        bad = len(recs) - len(vals)
        per[probe] = {"expected": expected, **_stats(vals, strict, bad)}
        pooled += vals
        pooled_strict += strict
        pooled_bad += bad
    first = first_position(judged)
    position = sum(first) / len(first) if first else None
    warnings = _warnings(per, position)
    result = {"mode": mode, "probes": per, "overall": _stats(pooled, pooled_strict, pooled_bad),
              "first_position_rate": position, "decisive_judgements": len(first), "warnings": warnings,
              "passed": not warnings, "judge": judge.identity(), "fingerprint": judge.fingerprint(),
              "judge_seconds": round(seconds, 2), "examples": _examples(judged, pairs)}
    for probe, s in per.items():
        acc = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.0%}"
        lo, hi = s["ci95"]
        log(f"judge check [{mode}] {probe}: agreement {acc} (95% CI {lo:.0%}–{hi:.0%}, n={s['n']}, unparseable "
            f"pairs {s['unparseable_pairs']})")
    return result, judged


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
