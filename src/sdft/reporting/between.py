"""Arm against arm, pooled over seeds (:mod:`sdft.reporting.report`): for each pair of :data:`~sdft.reporting.paired.PAIRED`
(vanilla → SDFT, SDFT → self, vanilla → self, each frame on its own), on the same items and the same seeds, the
safe rate / accuracy (per item, b's score minus a's, averaged over the seeds both arms have) and the retention
measure (per prompt, b's NLL of the seed model's answer minus a's). Mean with a bootstrap 95% interval and the
Wilcoxon signed-rank test on the per-item differences; the per-seed means show whether the seeds agree.
"""

from __future__ import annotations

from sdft.reporting.paired import arm_name, group_key, item_scores, pairings

Block = tuple


def _by_seed(runs: list[dict], name: str) -> dict[tuple, dict]:
    return {(group_key(r["meta"]), r["meta"].get("seed")): r for r in runs if arm_name(r["meta"]) == name}


def between_findings(data: dict) -> list[dict]:
    """One finding per (pair, measure, task): ``a``, ``b``, ``measure`` (score | retention), pooled mean/ci/p/n and
    the per-seed mean differences (points for scores, nats/token for retention)."""
    from sdft.evaluation.retention import per_prompt
    from sdft.stats import pooled_paired_difference

    out = []
    for a, b in pairings(data):
        ea, eb = _by_seed(data["evals"], a), _by_seed(data["evals"], b)
        keys = sorted(set(ea) & set(eb), key=str)
        if keys:
            tasks = sorted(set.intersection(*(set(ea[k]["results"]) & set(eb[k]["results"]) for k in keys)))
            for t in tasks:
                pairs = [(item_scores(ea[k]["folder"], t), item_scores(eb[k]["folder"], t)) for k in keys]
                out.append({"a": a, "b": b, "measure": "score", "task": t, "seeds": len(keys),
                            **pooled_paired_difference(pairs, 100.0)})
        ra, rb = _by_seed(data.get("retentions", []), a), _by_seed(data.get("retentions", []), b)
        keys = sorted(set(ra) & set(rb), key=str)
        if keys:
            tasks = sorted(set.intersection(*(set(ra[k]["retention"]["tasks"]) & set(rb[k]["retention"]["tasks"])
                                              for k in keys)))
            for t in tasks:
                pairs = [(per_prompt(ra[k]["retention"], t), per_prompt(rb[k]["retention"], t)) for k in keys]
                out.append({"a": a, "b": b, "measure": "retention", "task": t, "seeds": len(keys),
                            **pooled_paired_difference(pairs)})
    return out


def between_lines(findings: list[dict], alpha: float = 0.05) -> list[str]:
    """The verdict's sentences for the arm-vs-arm tests that are beyond chance."""
    lines = []
    for f in findings:
        if f["p"] is None or f["p"] >= alpha or f["mean"] is None:
            continue
        m, (lo, hi) = f["mean"], f["ci"]
        if f["measure"] == "score":
            what = f"scored {'higher' if m > 0 else 'lower'} than {f['a']} on {f['task']} (Δ {m:+.1f} points " \
                   f"[{lo:+.1f}, {hi:+.1f}]"
        else:
            what = f"kept {'more' if m < 0 else 'less'} of the seed model's own answers than {f['a']} on " \
                   f"{f['task']} (ΔNLL {m:+.3f}/token [{lo:+.3f}, {hi:+.3f}]"
        lines.append(f"{f['b']} {what}, Wilcoxon p = {f['p']:.3g}, n = {f['n']}, {f['seeds']} seed(s)).")
    return lines


def between_section(data: dict, findings: list[dict] | None = None) -> list[Block]:
    findings = between_findings(data) if findings is None else findings
    if not findings:
        return []
    rows = []
    for f in findings:
        unit = "{:+.1f}" if f["measure"] == "score" else "{:+.3f}"
        mean = "—" if f["mean"] is None else (unit.format(f["mean"]) + f" [{unit.format(f['ci'][0])}, "
                                               f"{unit.format(f['ci'][1])}]")
        rows.append([f"{f['a']} → {f['b']}", f["task"], "safe rate / accuracy (points)" if f["measure"] == "score"
                     else "retention ΔNLL (nats/token)", str(f["seeds"]),
                     ", ".join("—" if m is None else unit.format(m) for m in f["per_seed"]), mean, str(f["n"]),
                     "—" if f["p"] is None else f"{f['p']:.3g}"])
    return [("h2", "Arm against arm, pooled over seeds"),
            ("p", "Per item (or prompt), b minus a on the same seeds, averaged over the seeds: mean with a bootstrap "
                  "95% interval and the Wilcoxon signed-rank test. Scores: positive = b scores higher. Retention: "
                  "negative = b keeps more of the seed model's own answers than a."),
            ("table", ["a → b", "task", "measure", "seeds", "mean per seed", "pooled [95% CI]", "items",
                       "Wilcoxon p"], rows)]
