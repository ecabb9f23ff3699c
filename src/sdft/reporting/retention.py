"""The retention part of a report (:mod:`sdft.reporting.report`, :mod:`sdft.evaluation.retention`): per arm and task, how much
less likely the fine-tuned model finds the seed model's own answers (ΔNLL per token vs the seed model, paired per
prompt), per seed and pooled over seeds, as a table and a per-prompt distribution plot."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from sdft.evaluation.retention import paired, per_prompt
from sdft.reporting.paired import arm_group, arm_title

Block = tuple


def retention_findings(data: dict) -> list[dict]:
    """Seed model → each arm, per retention task: per seed ``paired`` (mean ΔNLL, bootstrap CI, Wilcoxon p, n,
    diffs) and pooled (per prompt, ΔNLL averaged over the arm's seeds)."""
    from sdft.stats import pooled_paired_difference

    rets = data.get("retentions", [])
    seed = next((r for r in rets if r["meta"].get("arm") == "seed"), None)
    if seed is None:
        return []
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rets:
        if r["meta"].get("arm") not in (None, "seed"):
            groups[arm_group(r["meta"])].append(r)
    out = []
    for g, runs in groups.items():
        for task in seed["retention"]["tasks"]:
            base = per_prompt(seed["retention"], task)
            ordered = sorted(runs, key=lambda r: str(r["meta"].get("seed")))
            arms = [per_prompt(r["retention"], task) for r in ordered]
            per_seed = [{"seed": r["meta"].get("seed"), **paired(base, arm)} for r, arm in zip(ordered, arms)]
            pooled = pooled_paired_difference([(base, arm) for arm in arms])
            out.append({"group": g, "arm": arm_title(g, data), "task": task, "measure": "retention",
                        "seed_nll": seed["retention"]["tasks"][task]["summary"].get("mean_nll"),
                        "per_seed": per_seed, "pooled": pooled, "p": pooled["p"],
                        "test": "Wilcoxon signed-rank", "max_tokens": seed["retention"].get("max_tokens")})
    return out


def _ci(r: dict) -> str:
    if r.get("mean") is None:
        return "—"
    return f"{r['mean']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]"


def _p(p: float | None) -> str:
    return "—" if p is None else f"{p:.3g}"


def retention_section(data: dict, figdir: Path, findings: list[dict] | None = None) -> list[Block]:
    findings = retention_findings(data) if findings is None else findings
    if not findings:
        return []
    head = ["arm", "task", "seed", "n prompts", "seed model NLL/token", "mean ΔNLL vs seed [95% CI]", "Wilcoxon p"]
    rows = []
    for f in findings:
        for s in f["per_seed"]:
            rows.append([f["arm"], f["task"], str(s["seed"]), str(s["n"]), f"{f['seed_nll']:.3f}"
                         if f["seed_nll"] is not None else "—", _ci(s), _p(s["p"])])
        if len(f["per_seed"]) > 1:
            means = [s["mean"] for s in f["per_seed"] if s["mean"] is not None]
            signs = " ".join("+" if m > 0 else "−" if m < 0 else "0" for m in means)
            sd = f", mean ± sd over seeds {statistics.mean(means):+.3f} ± {statistics.stdev(means):.3f}" \
                if len(means) > 1 else ""
            rows.append([f["arm"], f["task"], f"pooled ({len(f['per_seed'])} seeds: {signs}{sd})",
                         str(f["pooled"]["n"]), "", _ci(f["pooled"]), _p(f["pooled"]["p"])])
    blocks: list[Block] = [
        ("h2", "Retention: how likely each arm still finds the seed model's own answers"),
        ("p", f"Per evaluation prompt, the per-token NLL of the seed model's greedy answer (its first "
              f"{findings[0]['max_tokens']} tokens, teacher-forced) under the arm, minus the same under the seed model. "
              "Positive = the arm moved away from what the seed model would say. Mean over prompts with a bootstrap "
              "95% interval and the Wilcoxon signed-rank test on the per-prompt differences; pooled: each prompt's "
              "difference averaged over the seeds (signs per seed shown)."),
        ("table", head, rows)]
    for p in retention_plots(findings, figdir):
        blocks.append(("img", p, f"per-prompt ΔNLL vs the seed model: {p.stem.removeprefix('retention-')}"))
    return blocks


def retention_plots(findings: list[dict], figdir: Path) -> list[Path]:
    """One figure per task: the per-prompt ΔNLL (pooled over seeds) of every arm, as a box with the points."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional (the `eval` extra)
        return []
    out = []
    for task in dict.fromkeys(f["task"] for f in findings):
        fs = [f for f in findings if f["task"] == task and f["pooled"]["diffs"]]
        if not fs:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 0.6 * len(fs) + 1.6))
        try:
            ax.boxplot([f["pooled"]["diffs"] for f in fs], orientation="horizontal", showfliers=False)
        except TypeError:  # matplotlib < 3.10
            ax.boxplot([f["pooled"]["diffs"] for f in fs], vert=False, showfliers=False)
        for k, f in enumerate(fs, 1):
            ys = [k + 0.15 * ((j % 5) - 2) / 2 for j in range(len(f["pooled"]["diffs"]))]
            ax.plot(f["pooled"]["diffs"], ys, ".", alpha=0.5, color="tab:blue")
        ax.set_yticks(range(1, len(fs) + 1), [f["arm"] for f in fs])
        ax.axvline(0, color="grey", lw=1)
        ax.set_xlabel("ΔNLL per token of the seed's answer (arm − seed model)")
        ax.set_title(f"{task}: per-prompt retention")
        fig.tight_layout()
        path = figdir / f"retention-{task}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out
