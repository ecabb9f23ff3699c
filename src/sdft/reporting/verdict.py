"""The opening of a report (:mod:`sdft.reporting.report`): its answer, before any table.

- The verdict, written from the paired tests against the seed model: which arm moved which score (McNemar's exact
  test with one seed, the Wilcoxon test pooled over seeds with several) or the retention measure (Wilcoxon on the
  per-prompt ΔNLL) beyond chance (p < 0.05), in which direction -- or, plainly, that no arm did.
- A forest plot: each arm's difference from the seed model per task and measure, with 95% bootstrap intervals.
- The go/no-go gate when gap results exist: the seed model's NLL of the SDFT targets under the training prompt
  against the originals' and the ``self`` targets'. SDFT's premise holds when its targets sit well below the
  originals and near the seed's own answers; here: they close at least half the distance from originals to self.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from sdft.reporting.paired import score_findings
from sdft.reporting.retention import retention_findings

Block = tuple
ALPHA = 0.05
GATE_SHARE = 0.5  # SDFT targets must close at least this share of the originals → self NLL distance


def _moved(f: dict) -> str:
    m = f["pooled"]["mean"]
    if f["measure"] == "retention":
        way = "made the seed model's own answers less likely" if m > 0 else "made the seed model's answers more likely"
        return (f"{f['arm']} {way} on {f['task']} (ΔNLL {m:+.3f}/token [{f['pooled']['ci'][0]:+.3f}, "
                f"{f['pooled']['ci'][1]:+.3f}], Wilcoxon p = {f['p']:.3g}, n = {f['pooled']['n']})")
    way = "lowered" if m < 0 else "raised"
    seeds = f["per_seed"]
    at = ", ".join(f"{s['delta']:+.1f}" for s in seeds)
    return (f"{f['arm']} {way} the {f['metric']} on {f['task']} ({100 * f['seed_score']:.1f}% for the seed model; "
            f"Δ {m:+.1f} points{f' (per seed {at})' if len(seeds) > 1 else ''}, {f['test']} p = {f['p']:.3g})")


def verdict_lines(findings: list[dict]) -> list[str]:
    tested = [f for f in findings if f["p"] is not None or f["pooled"].get("n")]
    if not tested:
        return ["No paired test against the seed model could be made (no seed-model evaluation, or no fine-tuned arm)."]
    moved = [f for f in tested if f["p"] is not None and f["p"] < ALPHA]
    lines = [(_moved(f) + ".") for f in moved]
    if not moved:
        lines.append(f"No arm moved any score or the retention measure beyond chance: every paired test against the "
                     f"seed model has p ≥ {ALPHA} ({len(tested)} tests).")
    else:
        still = sorted({f"{f['arm']} on {f['task']} ({f['measure']})" for f in tested if f not in moved})
        if still:
            lines.append("Not beyond chance (p ≥ 0.05): " + "; ".join(still) + ".")
        lines.append(f"{len(tested)} tests, not corrected for multiplicity: at p < {ALPHA} about "
                     f"{ALPHA * len(tested):.1f} would pass by chance alone.")
    return lines


def gate_lines(data: dict) -> list[str]:
    """The go/no-go line per training set from the gap stages (seed-model NLL per token under the training prompt)."""
    out = []
    for ds in data["datasets"] or [None]:
        gaps = [g for g in data["gaps"] if g["meta"].get("dataset") == ds and g["gap"]["original"].get("n")]
        if not gaps:
            continue
        frame = lambda g: g["meta"].get("frame") or g["gap"].get("frame") or "release"  # noqa: E731
        sdft: dict[str, list[dict]] = {}
        for g in gaps:
            if frame(g) != "self":
                sdft.setdefault(frame(g), []).append(g)
        for fr, own in sorted(sdft.items()):
            seeds = {g["meta"].get("seed") for g in own}  # a frame run for fewer seeds is compared on its seeds
            same = [g for g in gaps if g["meta"].get("seed") in seeds]
            per_seed = {}  # the originals are the same rows in every frame of a seed: one value per seed
            for g in same:
                per_seed.setdefault(g["meta"].get("seed"), g["gap"]["original"]["mean_nll"])
            orig = statistics.mean(per_seed.values())
            selfs = [g["gap"]["distilled"]["mean_nll"] for g in same if frame(g) == "self"]
            x = statistics.mean(g["gap"]["distilled"]["mean_nll"] for g in own)
            n_seeds = f", {len(seeds)} seed{'s' if len(seeds) > 1 else ''}" if len(seeds) < len(
                {g["meta"].get("seed") for g in gaps}) else ""
            head = (f"{ds}: " if len(data["datasets"]) > 1 and ds else "") + (
                f"SDFT targets' ({fr} frame{n_seeds}) seed NLL under the training prompt: {x:.3f} vs originals "
                f"{orig:.3f}")
            if not selfs:
                out.append(head + " (no self arm: the gate needs one)")
                continue
            z = statistics.mean(selfs)
            ok = orig > z and (orig - x) >= GATE_SHARE * (orig - z)
            out.append(head + f" vs self {z:.3f} — gate {'passed' if ok else 'failed'} (SDFT must be well below the "
                       f"originals and near self: at least {GATE_SHARE:.0%} of the way from originals to self)")
    return out


def forest_plot(findings: list[dict], path: Path) -> Path | None:
    """Each arm's pooled difference from the seed model (dot) with its 95% interval and the per-seed values."""
    panels = list(dict.fromkeys((f["task"], f["measure"]) for f in findings if f["pooled"].get("mean") is not None))
    if not panels:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    arms = list(dict.fromkeys(f["arm"] for f in findings))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.2, 0.45 * len(arms) + 1.5),
                             squeeze=False, sharey=True)
    for ax, (task, measure) in zip(axes[0], panels):
        for f in (f for f in findings if (f["task"], f["measure"]) == (task, measure)):
            y, m, (lo, hi) = arms.index(f["arm"]), f["pooled"]["mean"], f["pooled"]["ci"]
            beyond = f["p"] is not None and f["p"] < ALPHA
            ax.errorbar([m], [y], xerr=[[m - lo], [hi - m]], fmt="o", color="tab:red" if beyond else "tab:blue",
                        capsize=3)
            per = [s.get("delta", s.get("mean")) for s in f["per_seed"]]
            if len(per) > 1:
                ax.plot([v for v in per if v is not None], [y] * len([v for v in per if v is not None]), "x",
                        color="grey", ms=4)
        ax.axvline(0, color="grey", lw=1)
        ax.set_title(f"{task}", fontsize=9)
        ax.set_xlabel("Δ points vs seed model" if measure == "score" else "ΔNLL/token vs seed model", fontsize=8)
    axes[0][0].set_yticks(range(len(arms)), arms, fontsize=8)
    axes[0][0].invert_yaxis()
    fig.suptitle("Each arm vs the seed model (95% interval; red: p < 0.05; x: per seed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def verdict_section(data: dict, figdir: Path) -> list[Block]:
    from sdft.reporting.between import between_findings, between_lines

    findings = score_findings(data) + retention_findings(data)
    between = between_lines(between_findings(data))
    blocks: list[Block] = [("h2", "Answer"), ("ul", verdict_lines(findings))]
    if between:  # arm against arm (vanilla → SDFT, SDFT → self, ...), pooled over seeds, beyond chance only
        blocks += [("p", "Between arms (same items and seeds, pooled; p < 0.05):"), ("ul", between)]
    gate = gate_lines(data)
    if gate:
        blocks.append(("p", "Go/no-go: " + " ".join(g + "." for g in gate)))
    plot = forest_plot(findings, figdir / "forest.png")
    if plot is not None:
        blocks.append(("img", plot, "forest plot: each arm's difference from the seed model"))
    return blocks
