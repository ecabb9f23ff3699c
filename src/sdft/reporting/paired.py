"""Paired comparisons of a report (:mod:`sdft.reporting.report`): two evaluations of the same items, compared item by item.

An arm's name in a report is its method plus, when the experiment sweeps distillation frames, the frame of the
rewrites it trained on: ``sdft[train]`` (:func:`arm_name`). Per seed, a → b is McNemar's exact test on the items
where exactly one is right; :func:`score_findings` also pools several seeds per item (the arm's mean over its
seeds).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from sdft.stats import mcnemar_exact

PAIRED = (("vanilla", "sdft"), ("vanilla-fair", "sdft-fair"), ("vanilla", "onpolicy"), ("sdft", "onpolicy"),
          ("sdft", "self"), ("vanilla", "self"))
ARM_NAMES = {"vanilla": "Vanilla", "sdft": "SDFT", "vanilla-fair": "Vanilla (fair preset)",
             "sdft-fair": "SDFT (fair preset)", "onpolicy": "on-policy self-distillation (TRL)",
             "self": "self (the seed's own answers)"}


def item_scores(folder: str | Path, task: str) -> dict[int, float]:
    """Per-item score: 1/0 for rule-scored tasks, 1/0.5/0 for judged pairs (unscored pairs left out)."""
    p = Path(folder) / task / "samples.jsonl"
    if not p.exists():
        return {}
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return {r["index"]: float(r["correct"]) for r in rows if r.get("correct") is not None}


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def arm_name(meta: dict) -> str:
    """The arm, with the distillation frame its targets came from when the experiment sweeps frames."""
    arm = meta.get("arm") or ""
    return f"{arm}[{meta['frame']}]" if meta.get("frame") else arm


def group_key(meta: dict) -> tuple:
    return (meta.get("dataset") or "", meta.get("num_samples"), meta.get("template"))


def pretty(name: str) -> str:
    base, _, frame = name.partition("[")
    return ARM_NAMES.get(base, base) + (f" ({frame.rstrip(']')} frame)" if frame else "")


def paired_cells(ea: dict, eb: dict, task: str) -> list[str]:
    """``a → b (Δ)``, the discordant counts and the exact McNemar p of two evals of the same items."""
    ra, rb = ea["results"][task], eb["results"][task]
    sa, sb = item_scores(ea["folder"], task), item_scores(eb["folder"], task)
    common = sorted(set(sa) & set(sb))
    only_a = sum(sa[i] > sb[i] for i in common)  # discordant items: an exact sign test (McNemar
    only_b = sum(sb[i] > sa[i] for i in common)  # for 0/1 scores), judged ties count as the middle
    return [f"{pct(ra['score'])} → {pct(rb['score'])} ({100 * (rb['score'] - ra['score']):+.1f})",
            f"{only_a} / {only_b}", f"{mcnemar_exact(only_a, only_b):.3g}"]


def pairings(data: dict) -> list[tuple[str, str]]:
    """The (a, b) arm pairs of :data:`PAIRED` the run has, each frame variant of an arm on its own."""
    names = {arm_name(e["meta"]) for e in data["evals"]}
    variants = lambda arm: sorted(n for n in names if n == arm or n.startswith(arm + "["))  # noqa: E731
    return [(x, y) for a, b in PAIRED for x in variants(a) for y in variants(b)]


def comparison_table(data: dict, a: str = "vanilla", b: str = "sdft") -> tuple[list[str], list[list[str]]]:
    """Per task and seed: a → b (Δ) with the exact McNemar p-value on the same items, and the seed model."""
    seed_runs = [e for e in data["evals"] if e["meta"].get("arm") == "seed"]
    pairs: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for e in data["evals"]:
        m = e["meta"]
        if arm_name(m) in (a, b):
            pairs[(m.get("seed"), group_key(m))][arm_name(m)] = e
    multi = len(data["datasets"]) > 1
    header = (["trained on"] if multi else []) + ["task", "seed", "n train", "seed model", f"{a} → {b} (Δ)",
                                                  f"items only {a} / only {b} better", "McNemar p"]
    rows = []
    for (seed, (ds, n, _tmpl)), arms in sorted(pairs.items(), key=lambda kv: str(kv[0])):
        if a not in arms or b not in arms:
            continue
        for t in sorted(arms[a]["results"]):
            if t not in arms[b]["results"]:
                continue
            base = seed_runs[0]["results"].get(t) if seed_runs else None
            rows.append(([ds] if multi else []) + [t, str(seed), str(n or "all"), pct(base["score"]) if base else "—",
                         *paired_cells(arms[a], arms[b], t)])
    return header, rows


def forgetting_table(data: dict) -> tuple[list[str], list[list[str]]]:
    """Seed model → every fine-tuned arm, per task, paired on the same items: did fine-tuning move the score
    (forgetting when it falls) by more than chance? The paper's question, asked of each arm on its own."""
    seed = next((e for e in data["evals"] if e["meta"].get("arm") == "seed"), None)
    if seed is None:
        return [], []
    multi = len(data["datasets"]) > 1
    header = ["arm"] + (["trained on"] if multi else []) + ["seed", "n train", "task", "seed model → arm (Δ)",
                                                           "items only seed / only arm better", "McNemar p"]
    rows = []
    tuned = [e for e in data["evals"] if e["meta"].get("arm") not in (None, "seed")]
    rank = {"vanilla": 0, "sdft": 1}  # then mixes, presets and other methods by name
    for e in sorted(tuned, key=lambda e: (group_key(e["meta"])[0], rank.get(e["meta"]["arm"], 2),
                                          arm_name(e["meta"]), str(e["meta"]))):
        m = e["meta"]
        for t in sorted(set(e["results"]) & set(seed["results"])):
            rows.append([arm_name(m)] + ([m.get("dataset") or "—"] if multi else [])
                        + [str(m.get("seed")), str(m.get("num_samples") or "all"), t, *paired_cells(seed, e, t)])
    return header, rows


def arm_group(meta: dict) -> tuple:
    """What makes one arm of a report: training set, size, template and the arm's name (seeds are pooled)."""
    return (*group_key(meta), arm_name(meta))


def arm_title(group: tuple, data: dict) -> str:
    ds, n, template, name = group
    return ((f"{ds}: " if len(data["datasets"]) > 1 and ds else "") + name + (f" n={n}" if n else "")
            + (f" template={template}" if template else ""))


def score_findings(data: dict) -> list[dict]:
    """Seed model → each arm, per task: per seed (McNemar's exact p) and pooled over seeds (per item, the arm's mean
    score over its seeds minus the seed model's: mean [bootstrap 95% CI], Wilcoxon p). ``p`` is the test the verdict
    reads: McNemar's with one seed, the pooled Wilcoxon with several. Differences in points."""
    from sdft.stats import paired_difference

    seed = next((e for e in data["evals"] if e["meta"].get("arm") == "seed"), None)
    if seed is None:
        return []
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for e in data["evals"]:
        if e["meta"].get("arm") not in (None, "seed"):
            groups[arm_group(e["meta"])].append(e)
    out = []
    for g, runs in groups.items():
        for t in sorted(set(seed["results"]).intersection(*(r["results"] for r in runs))):
            base = item_scores(seed["folder"], t)
            per_seed, items = [], defaultdict(list)
            for r in sorted(runs, key=lambda r: str(r["meta"].get("seed"))):
                s = item_scores(r["folder"], t)
                common = sorted(set(base) & set(s))
                b_, c_ = sum(base[i] > s[i] for i in common), sum(s[i] > base[i] for i in common)
                per_seed.append({"seed": r["meta"].get("seed"), "delta": 100 * (r["results"][t]["score"]
                                                                                - seed["results"][t]["score"]),
                                 "only_seed": b_, "only_arm": c_, "p": mcnemar_exact(b_, c_), "n": len(common)})
                for i in common:
                    items[i].append(s[i])
            idx = sorted(i for i in items if len(items[i]) == len(runs))
            pooled = paired_difference([100 * base[i] for i in idx], [100 * sum(items[i]) / len(items[i]) for i in idx])
            p = per_seed[0]["p"] if len(per_seed) == 1 else pooled["p"]
            out.append({"group": g, "arm": arm_title(g, data), "task": t, "measure": "score",
                        "metric": seed["results"][t].get("metric", "score"), "seed_score": seed["results"][t]["score"],
                        "per_seed": per_seed, "pooled": pooled, "p": p,
                        "test": "McNemar" if len(per_seed) == 1 else "Wilcoxon (pooled over seeds)"})
    return out


def pooled_section(data: dict) -> list[tuple]:
    """With several seeds: seed model → each arm pooled over seeds (per-seed Δ, mean ± sd, pooled Δ and test)."""
    import statistics

    rows = []
    for f in score_findings(data):
        ds = [s["delta"] for s in f["per_seed"]]
        if len(ds) < 2:
            continue
        pl = f["pooled"]
        rows.append([f["arm"], f["task"], ", ".join(f"{d:+.1f}" for d in ds),
                     f"{statistics.mean(ds):+.1f} ± {statistics.stdev(ds):.1f}",
                     f"{pl['mean']:+.1f} [{pl['ci'][0]:+.1f}, {pl['ci'][1]:+.1f}]", str(pl["n"]),
                     "—" if pl["p"] is None else f"{pl['p']:.3g}"])
    if not rows:
        return []
    return [("h3", "Seed model → each arm, pooled over seeds"),
            ("p", "Δ in points per seed, their mean ± sd, and pooled per item (the arm's mean score over its seeds "
                  "minus the seed model's): mean with a bootstrap 95% interval and the Wilcoxon signed-rank test."),
            ("table", ["arm", "task", "Δ per seed", "mean ± sd over seeds", "pooled Δ [95% CI]", "items",
                       "Wilcoxon p"], rows)]
