"""``sdft report RUN``: tables and plots of an experiment, as markdown and a self-contained HTML page.

The report is built from what the stages wrote (results.json, samples.jsonl, manifests, shift.json); nothing is
recomputed except statistics. Scores are shown with 95% Wilson intervals; with several seeds, mean ± sd over
seeds; vanilla vs SDFT is compared per item with an exact McNemar test on the same prompts.
"""

from __future__ import annotations

import base64
import html
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from sdft.evaluation.tables import judge_marker
from sdft.data import display_path
from sdft.stats import mcnemar_exact
from sdft.store import atomic_write_text, read_json
from sdft.reporting.paired import ARM_NAMES, PAIRED, arm_name, comparison_table, forgetting_table, pairings, pretty

Block = tuple  # ("h1"|"h2"|"p"|"ul"|"table"|"img", ...)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def collect(root: Path) -> dict[str, Any]:
    exp = read_json(root / "experiment.json")
    stages = exp["stages"]
    evals, trains, distills, shifts, gaps, retentions = [], [], [], [], [], []
    for s in stages:
        folder = Path(s["folder"])
        if not (folder / "STAGE.json").exists():
            continue
        info = {**s, "seconds": read_json(folder / "STAGE.json").get("seconds")}
        if s["kind"] == "eval" and (folder / "results.json").exists():
            info["results"] = {r["task"]: r for r in read_json(folder / "results.json")}
            evals.append(info)
        elif s["kind"] == "train" and (folder / "manifest.json").exists():
            info["manifest"] = read_json(folder / "manifest.json")
            trains.append(info)
        elif s["kind"] == "distill" and (folder / "manifest.json").exists():
            info["manifest"] = read_json(folder / "manifest.json")
            distills.append(info)
        elif s["kind"] == "gap" and (folder / "gap.json").exists():
            info["gap"] = read_json(folder / "gap.json")
            gaps.append(info)
        elif s["kind"] == "shift" and (folder / "shift.json").exists():
            info["shift"] = read_json(folder / "shift.json")
            shifts.append(info)
        elif s["kind"] == "retention" and (folder / "retention.json").exists():
            info["retention"] = read_json(folder / "retention.json")
            retentions.append(info)
    datasets = list(dict.fromkeys(s["meta"]["dataset"] for s in stages if s["meta"].get("dataset")))
    return {"config": exp["config"], "evals": evals, "trains": trains, "distills": distills, "shifts": shifts,
            "gaps": gaps, "stages": stages, "datasets": datasets, "retentions": retentions}  # datasets: in plan order


def _group_key(meta: dict) -> tuple:
    return (meta.get("dataset") or "", meta.get("num_samples"), meta.get("template"))


def _arm_label(meta: dict, data: dict) -> str:
    """The arm, prefixed with its training set when the run has several."""
    arm = arm_name(meta)  # with the distillation frame when the run sweeps frames
    return f"{meta['dataset']}: {arm}" if len(data["datasets"]) > 1 and meta.get("dataset") else arm


def score_table(data: dict) -> tuple[list[str], list[list[str]], list[str]]:
    tasks = sorted({t for e in data["evals"] for t in e["results"]})
    by_arm: dict[tuple, list[dict]] = defaultdict(list)
    for e in data["evals"]:
        m = e["meta"]
        by_arm[(arm_name(m), _group_key(m))].append(e)
    multi = len(data["datasets"]) > 1
    header = ["arm"] + (["trained on"] if multi else []) + ["n train", "template", "seeds"] + tasks
    rows = []
    order = lambda kv: (kv[0][0] != "seed", kv[0][1][0], str(kv[0]))  # noqa: E731 — seed first, then by dataset
    for (arm, (ds, n, tmpl)), runs in sorted(by_arm.items(), key=order):
        row = [arm] + ([ds or "—"] if multi else []) + [str(n or "all"), tmpl or "default", str(len(runs))]
        for t in tasks:
            rs = [r["results"][t] for r in runs if t in r["results"]]
            if not rs:
                row.append("—")
            elif len(rs) == 1:
                r = rs[0]
                row.append(f"{_pct(r['score'])} [{_pct(r['ci95'][0])}, {_pct(r['ci95'][1])}] (n={r['n']}){judge_marker(r)}")
            else:
                vals = [100 * r["score"] for r in rs]
                row.append(f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f} (n={rs[0]['n']}×{len(rs)})"
                           + max(map(judge_marker, rs)))
        rows.append(row)
    return header, rows, tasks


def _plot(path: Path, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, pts in sorted(series.items()):
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep_plots(data: dict, figdir: Path) -> list[Path]:
    out = []
    tasks = sorted({t for e in data["evals"] for t in e["results"]})
    for t in tasks:
        by_n: dict[str, list] = defaultdict(list)
        by_mix: dict[str, list] = defaultdict(list)
        for e in data["evals"]:
            m, r = e["meta"], e["results"].get(t)
            if r is None or m.get("arm") == "seed":
                continue
            sdft_series = _arm_label({**m, "arm": "sdft"}, data)
            if m.get("num_samples"):
                by_n[_arm_label(m, data)].append((m["num_samples"], 100 * r["score"]))
            if m.get("arm", "").startswith("sdft") and "fair" not in m["arm"]:
                mix = m.get("mix_ratio")
                by_mix[sdft_series].append((1.0 if mix is None else mix, 100 * r["score"]))
            if m.get("arm") == "vanilla":
                by_mix[sdft_series].append((0.0, 100 * r["score"]))
        if any(len(v) > 1 for v in by_n.values()):
            out.append(_plot(figdir / f"size-{t}.png", by_n, "training rows", f"{t} score (%)",
                             f"{t} vs training-set size (Figs. 5-6)"))
        if any(len({x for x, _ in pts}) > 2 for pts in by_mix.values()):
            out.append(_plot(figdir / f"mix-{t}.png", by_mix, "share of distilled targets", f"{t} score (%)",
                             f"{t} vs mix ratio (Figs. 7-8)"))
    return out


def shift_section(data: dict, figdir: Path) -> list[Block]:
    if not data["shifts"]:
        return []
    blocks: list[Block] = [("h2", "Drift from the seed model's answers (paper §5, Fig. 9)")]
    header = ["arm", "seed", "n train", "task", "n", "embedding cosine", "BLEU-4", "ROUGE-L", "LoRA distance"]
    rows, per_arm = [], defaultdict(dict)
    for s in data["shifts"]:
        sh, m = s["shift"], s["meta"]
        summ = sh.get("summary", {})
        dist = "—"
        adapter_stage = next((t for t in data["trains"] if t["meta"] == m), None)
        if adapter_stage:
            try:
                from sdft.evaluation.weights import lora_distance

                dist = f"{lora_distance(Path(adapter_stage['folder']))['total']:.4f}"
            except Exception:  # a full fine-tune or a missing adapter: not shown
                dist = "—"

        def fmt(k: str) -> str:
            v = summ.get(k, {})
            if not v:
                return "—"
            return f"{v['mean']:.3f}" + (f" ± {v['sd']:.3f}" if v.get("sd") is not None else "")

        rows.append([_arm_label(m, data), str(m.get("seed")), str(m.get("num_samples") or "all"), sh.get("task", ""),
                     str(sh.get("pairing", {}).get("n_paired", "")), fmt("cosine"), fmt("bleu4"), fmt("rougeL")] + [dist])
        for metric in ("cosine", "bleu4", "rougeL"):
            vals = [r[metric] for r in sh.get("per_sample", []) if r.get(metric) is not None]
            if vals:
                per_arm[metric][f"{_arm_label(m, data)} (seed {m.get('seed')})"] = vals
    blocks.append(("table", header, rows))
    try:
        from sdft.evaluation.shift import histogram

        for metric, series in per_arm.items():
            p = figdir / f"shift-{metric}.png"
            label = METRIC_LABELS.get(metric, metric)
            histogram(series, p, f"per-sample {label} to the seed model's answers",
                      xlabel=f"{label} to the seed model's answer")
            blocks.append(("img", p, f"Fig. 9 style: {metric}, means marked"))
    except ImportError:
        pass
    return blocks


METRIC_LABELS = {"cosine": "embedding cosine similarity", "bleu4": "BLEU-4", "rougeL": "ROUGE-L"}


def write_report(root: str | Path) -> Path:
    root = Path(root)
    data = collect(root)
    figdir = root / "report"
    figdir.mkdir(parents=True, exist_ok=True)
    cfg = data["config"]
    sets = cfg.get("datasets") or [{"data": cfg["data"], "task": cfg["task"]}]
    trained_on = "; ".join(f"`{d['data']}` (task {d['task']})" for d in sets)
    blocks: list[Block] = [("h1", f"SDFT experiment: {cfg['name']}"),
                           ("p", f"Seed model `{cfg['model']}`, trained on {trained_on}, "
                                 f"methods {', '.join(cfg['methods'])}, seeds {cfg['seeds']}. Scores in %, with 95% "
                                 "Wilson intervals [lo, hi] and the number of evaluated items.")]
    from sdft.reporting.verdict import verdict_section

    blocks += verdict_section(data, figdir)  # the answer first: verdict, go/no-go gate, forest plot
    header, rows, tasks = score_table(data)
    blocks += [("h2", "Scores by arm (paper Tables 1-2 layout)"), ("table", header, rows)]
    for a, b in pairings(data):
        ch, cr = comparison_table(data, a, b)
        if cr:
            blocks += [("h2", f"{pretty(a)} → {pretty(b)}, paired on the same items"),
                       ("p", "Δ in points; McNemar's exact test on items where exactly one arm is right (for the "
                             "judged win rate: a sign test on items whose pair scores differ). p ≥ 0.05 means the "
                             "difference is not distinguishable from noise at this n."), ("table", ch, cr)]
    fh, fr = forgetting_table(data)
    if fr:
        blocks += [("h2", "Seed model → each fine-tuned arm, paired on the same items"),
                   ("p", "Did fine-tuning move the seed model's score by more than chance? Δ in points (negative = "
                         "the arm lost what the seed model had); McNemar's exact test as above."), ("table", fh, fr)]
    from sdft.reporting.between import between_section
    from sdft.reporting.paired import pooled_section
    from sdft.reporting.retention import retention_section

    blocks += pooled_section(data) + retention_section(data, figdir) + between_section(data)
    for p in sweep_plots(data, figdir):
        blocks.append(("img", p, p.stem))
    blocks += shift_section(data, figdir)
    if data["distills"]:
        dh = ["distillation", "rows", "accepted", "rejections by reason", "cut off at max_new_tokens (accepted)",
              "generated tok/s"]
        dr = []
        for d in data["distills"]:
            c = d["manifest"]["counts"]
            reasons = ", ".join(f"{k} {v}" for k, v in c["by_reason"].items() if k != "accepted")
            dr.append([d["label"], str(c["rows"]), f"{100 * c['acceptance_rate']:.1f}%", reasons or "—",
                       f"{c['truncated']} ({c['truncated_accepted']})" if "truncated" in c else "—",
                       str(d["manifest"].get("this_session", {}).get("tokens_per_s") or "—")])
        blocks += [("h2", "Distillation"), ("table", dh, dr)]
        blocks += gap_section(data)
        blocks += examples(data)
    if data["trains"]:
        th = ["training run", "rows", "targets rewritten", "target tokens", "steps", "loss first → last", "tok/s"]
        tr = []
        for t in data["trains"]:
            m = t["manifest"]
            tr.append([t["label"], str(m["targets"]["rows"]), f"{100 * m['targets']['share_changed']:.1f}%",
                       str(m["tokens"]["target_tokens"]), str(m["steps"]),
                       f"{m['loss_first'] or 0:.3f} → {m['loss_last'] or 0:.3f}", str(m["train_tokens_per_s"])])
        blocks += [("h2", "Training (equal budgets per arm)"), ("table", th, tr)]
    blocks += provenance(data)
    blocks += [("h2", "Not measured here"), ("ul", not_measured(tasks))]
    md = render_markdown(blocks, root)
    atomic_write_text(root / "report.md", md)
    atomic_write_text(root / "report.html", render_html(blocks, cfg["name"]))
    return root / "report.html"


def gap_section(data: dict) -> list[Block]:
    if not data["gaps"]:
        return []
    head = ["distillation", "rows", "seed NLL/token: original", "distilled", "mean gap", "distilled more likely"]
    rows = []
    for g in data["gaps"]:
        r = g["gap"]
        rows.append([g["label"], str(r["rows"]), f"{r['original']['mean_nll']:.3f} (ppl {r['original']['perplexity']:.1f})",
                     f"{r['distilled']['mean_nll']:.3f} (ppl {r['distilled']['perplexity']:.1f})",
                     f"{r['mean_gap']:+.3f}", f"{100 * r['share_distilled_more_likely']:.0f}%"])
    return [("h3", "Distribution gap: how likely the seed model finds each arm's targets"),
            ("p", "Per-token negative log-likelihood under the seed model of the training targets (lower = closer to "
                  "the model's own distribution). Vanilla trains on the originals, SDFT on the distilled targets."),
            ("table", head, rows)]


def examples(data: dict, k: int = 3) -> list[Block]:
    """A few accepted rewrites of the first distillation of each training set (paper appendix style)."""
    first = {}
    for d in data["distills"]:
        first.setdefault(d["meta"].get("dataset"), d)
    out = []
    for d in first.values():
        rows_path = Path(d["folder"]) / "rows.jsonl"
        rows = [r for r in map(json.loads, rows_path.read_text().splitlines()) if r.get("accepted")][:k] \
            if rows_path.exists() else []
        out += [[d["label"], _short(r["instruction"]), _short(r["original"]), _short(r["output"])] for r in rows]
    if not out:
        return []
    return [("h3", "Original vs distilled (accepted rewrites)"),
            ("table", ["distillation", "instruction", "original", "distilled"], out)]


def _short(s: str, n: int = 300) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _relative_paths(obj: Any) -> Any:
    """The config with every absolute path shown as :func:`sdft.data.display_path` does."""
    if isinstance(obj, dict):
        return {k: _relative_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative_paths(v) for v in obj]
    return display_path(obj) if isinstance(obj, str) and obj.startswith("/") else obj


def provenance(data: dict) -> list[Block]:
    items = []
    for i, d in enumerate(data["distills"]):
        m = d["manifest"]
        items.append(f"data ({d['label']}): `{display_path(m['input']['path'], data.get('root'))}` sha256 "
                     f"{m['input']['sha256'][:16]}…")
        if i:
            continue
        items.append("versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()))
        items.append(f"distillation prompt format: {m['prompt_format']}, template {m['template']['name']}, "
                     f"decoding {m['decoding']}")
    for e in data["evals"][:1]:
        r = next(iter(e["results"].values()))
        items.append(f"evaluation: backend {r.get('backend')}, prompt format {r.get('prompt_format')}, "
                     f"decoding temperature {r.get('decoding', {}).get('temperature')}")
    secs = [(s["label"], s["seconds"]) for s in data["evals"] + data["trains"] + data["distills"] + data["shifts"]
            + data["gaps"]]
    items.append("wall time per stage: " + "; ".join(f"{l} {s:.0f}s" for l, s in secs if s is not None))
    items.append("config: " + json.dumps(_relative_paths(data["config"]), default=str))
    return [("h2", "Provenance"), ("ul", items)]


def not_measured(tasks: list[str]) -> list[str]:
    out = []
    if "alpacaeval" not in tasks:
        out.append("helpfulness (AlpacaEval win rate): not in this run's eval tasks")
    out.append("knowledge benchmarks (MMLU, TruthfulQA, ARC, HellaSwag, Winogrande): not in this run")
    for t in ("gsm8k", "advbench", "advbench-jailbreak", "humaneval", "openfunctions", "multiarith"):
        if t not in tasks:
            out.append(f"{t}: not evaluated in this run")
    return out


def render_markdown(blocks: list[Block], root: Path) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + b[1] + "\n")
        elif kind == "p":
            out.append(b[1] + "\n")
        elif kind == "ul":
            out.append("\n".join(f"- {i}" for i in b[1]) + "\n")
        elif kind == "table":
            header, rows = b[1], b[2]
            esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
            out.append("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
                       + "".join("| " + " | ".join(esc(c) for c in r) + " |\n" for r in rows))
        elif kind == "img":
            out.append(f"![{b[2]}]({Path(b[1]).relative_to(root)})\n")
    return "\n".join(out)


def render_html(blocks: list[Block], title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;"
             "vertical-align:top}th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}"
             "</style></head><body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(b[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in b[1]) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                                   for r in b[2]) + "</table>")
        elif kind == "img":
            data = base64.b64encode(Path(b[1]).read_bytes()).decode()
            parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(b[2])}'>"
                         f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
