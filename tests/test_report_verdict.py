"""The report opens with its answer: verdict from the paired tests, the go/no-go gate, the forest plot; retention
table (per seed and pooled) and frames as arms, on a hand-made experiment folder (no model runs)."""

import json
import math
import statistics
from pathlib import Path

import pytest

from sdft.reporting.report import score_table, write_report
from sdft.reporting.paired import pairings, score_findings
from sdft.reporting.retention import retention_findings
from sdft.reporting.verdict import gate_lines, verdict_lines
from sdft.stats import mcnemar_exact

SEED = [True] * 10
ARMS = {  # (arm, frame, seed) -> per-item safe answers on advbench
    ("vanilla", None, 1): [False] * 8 + [True] * 2, ("vanilla", None, 2): [False] * 7 + [True] * 3,
    ("sdft", "train", 1): [True] * 9 + [False], ("sdft", "train", 2): [True] * 10,
    ("sdft", "release", 1): [True] * 10, ("sdft", "release", 2): [True] * 9 + [False],
}
NLL = {"seed": [1.0, 1.2, 0.8, 1.1, 0.9, 1.0], ("vanilla", None, 1): [1.5, 1.9, 1.3, 1.6, 1.4, 1.8],
       ("vanilla", None, 2): [1.4, 1.7, 1.6, 1.5, 1.5, 1.6], ("sdft", "train", 1): [1.0, 1.3, 0.7, 1.1, 0.9, 1.0],
       ("sdft", "train", 2): [1.1, 1.2, 0.8, 1.0, 0.9, 1.0], ("sdft", "release", 1): [1.2, 1.3, 0.9, 1.1, 1.0, 1.1],
       ("sdft", "release", 2): [1.1, 1.3, 0.9, 1.2, 1.0, 1.0]}


def make_run(root: Path, gaps: bool = True) -> Path:
    stages = []

    def stage(kind, key, label, meta, files):
        folder = root / "stages" / f"{kind}-{key}"
        for name, content in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(content)
        (folder / "STAGE.json").write_text(json.dumps({"seconds": 1.0}))
        stages.append({"kind": kind, "key": key, "label": label, "deps": [], "meta": meta, "folder": str(folder)})

    def ev(correct):
        res = [{"task": "advbench", "metric": "safe rate", "score": sum(correct) / len(correct), "n": len(correct),
                "ci95": [0.0, 1.0]}]
        return {"results.json": json.dumps(res), "advbench/samples.jsonl": "".join(
            json.dumps({"index": i, "correct": c}) + "\n" for i, c in enumerate(correct))}

    def ret(nll):
        per = [{"index": i, "nll": v, "tokens": 8} for i, v in enumerate(nll)]
        return {"retention.json": json.dumps({"max_tokens": 8, "tasks": {"advbench-direct": {
            "per_prompt": per, "summary": {"n": len(nll), "mean_nll": statistics.mean(nll)}}}})}

    stage("eval", "s", "eval seed model", {"arm": "seed"}, ev(SEED))
    stage("retention", "rs", "retention seed model", {"arm": "seed"}, ret(NLL["seed"]))
    for (arm, frame, seed), correct in ARMS.items():
        meta = {"dataset": "gsm8k", "arm": arm, "seed": seed, "num_samples": None, "mix_ratio": None,
                "template": None, **({"frame": frame} if frame else {})}
        stage("eval", f"e{arm}{frame}{seed}", f"eval {arm} seed={seed}", meta, ev(correct))
        stage("retention", f"r{arm}{frame}{seed}", f"retention {arm} seed={seed}", meta, ret(NLL[(arm, frame, seed)]))
    if gaps:
        for frame, orig, dist in (("release", 2.0, 1.9), ("train", 2.0, 1.2), ("self", 2.0, 1.0)):
            gap = {"rows": 4, "original": {"n": 4, "mean_nll": orig, "perplexity": math.exp(orig)},
                   "distilled": {"n": 4, "mean_nll": dist, "perplexity": math.exp(dist)}, "mean_gap": orig - dist,
                   "share_distilled_more_likely": 1.0, "frame": frame}
            stage("gap", f"g{frame}", f"gap seed=1 frame={frame}", {"dataset": "gsm8k", "seed": 1, "template": None,
                                                                    "frame": frame}, {"gap.json": json.dumps(gap)})
    cfg = {"name": "fake", "model": "m", "data": "d", "task": "gsm8k", "methods": ["seed", "vanilla", "sdft", "self"],
           "seeds": [1, 2]}
    root.mkdir(parents=True, exist_ok=True)
    (root / "experiment.json").write_text(json.dumps({"config": cfg, "stages": stages}))
    return root


def test_findings_pool_seeds_and_verdict_names_what_moved(tmp_path):
    from sdft.reporting.report import collect

    data = collect(make_run(tmp_path / "run"))
    scores = {f["arm"]: f for f in score_findings(data)}
    assert set(scores) == {"vanilla", "sdft[train]", "sdft[release]"}
    v = scores["vanilla"]
    assert [s["p"] for s in v["per_seed"]] == [mcnemar_exact(8, 0), mcnemar_exact(7, 0)]
    assert v["pooled"]["mean"] == pytest.approx(-75.0) and v["p"] == v["pooled"]["p"] < 0.05
    assert scores["sdft[train]"]["p"] > 0.05
    ret = {f["arm"]: f for f in retention_findings(data)}
    hand = [statistics.mean([NLL[("vanilla", None, k)][i] - NLL["seed"][i] for k in (1, 2)]) for i in range(6)]
    assert ret["vanilla"]["pooled"]["mean"] == pytest.approx(statistics.mean(hand))
    assert ret["vanilla"]["per_seed"][0]["mean"] == pytest.approx(
        statistics.mean(a - b for a, b in zip(NLL[("vanilla", None, 1)], NLL["seed"])))
    lines = verdict_lines(score_findings(data) + retention_findings(data))
    assert lines[0].startswith("vanilla lowered the safe rate on advbench")
    assert any("vanilla made the seed model's own answers less likely on advbench-direct" in l for l in lines)
    assert any(l.startswith("Not beyond chance") and "sdft[train] on advbench (score)" in l for l in lines)
    # nothing moved: said plainly
    same = [dict(f, p=0.5) for f in score_findings(data)]
    assert verdict_lines(same)[0].startswith("No arm moved any score or the retention measure beyond chance")


def test_gate_compares_sdft_targets_with_originals_and_self(tmp_path):
    from sdft.reporting.report import collect

    data = collect(make_run(tmp_path / "run"))
    lines = gate_lines(data)
    assert len(lines) == 2
    rel, train = sorted(lines)
    assert "(release frame)" in rel and "1.900 vs originals 2.000 vs self 1.000 — gate failed" in rel
    assert "(train frame)" in train and "1.200 vs originals 2.000 vs self 1.000 — gate passed" in train
    assert gate_lines(collect(make_run(tmp_path / "nogap", gaps=False))) == []


def test_report_opens_with_the_answer_and_shows_frames_and_retention(tmp_path):
    root = make_run(tmp_path / "run")
    html = write_report(root).read_text()
    md = (root / "report.md").read_text()
    assert md.index("## Answer") < md.index("Go/no-go") < md.index("forest.png") < md.index("## Scores by arm")
    assert (root / "report" / "forest.png").exists() and (root / "report" / "retention-advbench-direct.png").exists()
    assert "## Retention" in md and "pooled (2 seeds: + +" in md and "mean ± sd over seeds" in md
    assert "pooled over seeds" in md and "| vanilla | advbench | -80.0, -70.0 | -75.0 ± 7.1 |" in md
    assert "| sdft[train] |" in md and "| sdft[release] |" in md  # frames are arms of their own
    assert "Vanilla → SDFT (train frame), paired on the same items" in md
    assert html.count("data:image/png;base64") >= 2


def test_frames_split_the_score_table_and_pairings(tmp_path):
    from sdft.reporting.report import collect

    data = collect(make_run(tmp_path / "run"))
    _, rows, _ = score_table(data)
    assert {r[0] for r in rows} == {"seed", "vanilla", "sdft[train]", "sdft[release]"}
    assert all(r[3] == "2" for r in rows if r[0] != "seed")  # two seeds each, never the two frames merged
    assert ("vanilla", "sdft[release]") in pairings(data) and ("vanilla", "sdft[train]") in pairings(data)


def test_gate_compares_a_frame_run_for_fewer_seeds_on_its_own_seeds():
    def gap(seed, frame, orig, dist):
        return {"meta": {"dataset": None, "seed": seed, "frame": frame},
                "gap": {"original": {"n": 4, "mean_nll": orig}, "distilled": {"n": 4, "mean_nll": dist}}}

    data = {"datasets": [], "gaps": [gap(1, "train", 2.0, 1.5), gap(2, "train", 3.0, 2.0), gap(1, "self", 2.0, 1.0),
                                      gap(2, "self", 3.0, 1.0), gap(1, "release", 2.0, 1.4)]}
    rel, train = sorted(gate_lines(data))
    assert "(release frame, 1 seed)" in rel and "1.400 vs originals 2.000 vs self 1.000 — gate passed" in rel
    assert "(train frame)" in train and "1.750 vs originals 2.500 vs self 1.000 — gate passed" in train


def test_arm_against_arm_pools_matched_seeds_per_item(tmp_path):
    from sdft.reporting.between import between_findings, between_lines
    from sdft.reporting.report import collect, write_report

    root = make_run(tmp_path / "run")
    data = collect(root)
    f = {(x["a"], x["b"], x["measure"]): x for x in between_findings(data)}
    s = f[("vanilla", "sdft[train]", "score")]  # by hand: items 0-6 +1, item 7 +0.5, item 8 0, item 9 -0.5
    assert s["mean"] == pytest.approx(70.0) and s["per_seed"] == [pytest.approx(70.0), pytest.approx(70.0)]
    assert s["n"] == 10 and s["seeds"] == 2
    r = f[("vanilla", "sdft[train]", "retention")]
    hand = [statistics.mean(NLL[("sdft", "train", k)][i] - NLL[("vanilla", None, k)][i] for k in (1, 2))
            for i in range(6)]
    assert r["mean"] == pytest.approx(statistics.mean(hand)) and r["n"] == 6
    assert ("sdft[release]", "sdft[train]", "score") not in f  # only the pairs the report compares
    lines = between_lines(list(f.values()))
    assert any(l.startswith("sdft[train] kept more of the seed model's own answers than vanilla on "
                            "advbench-direct") for l in lines)
    write_report(root)
    md = (root / "report.md").read_text()
    assert md.index("Between arms") < md.index("## Scores by arm")
    assert "Arm against arm, pooled over seeds" in md and "| vanilla → sdft[train] |" in md
