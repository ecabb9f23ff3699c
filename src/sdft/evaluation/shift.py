"""Shift analysis (paper §5): how far a fine-tuned model moved from its seed, in answers
(:mod:`sdft.evaluation.similarity`, paired per prompt between two eval runs here) and in weights
(:mod:`sdft.evaluation.weights`)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Callable, Sequence

from sdft.data import DataError
from sdft.evaluation.similarity import METRICS, similarity
from sdft.store import atomic_write_json

SAMPLES = "samples.jsonl"  # per-sample file written by sdft.evaluation.scoring.write_results into <run>/<task>/
SHIFT_JSON = "shift.json"

# ----------------------------------------------------------------------------------------------------------------
# pairing two eval runs


def _read_outputs(path: Path) -> dict[int, str]:
    from sdft.evaluation.scoring import read_predictions

    if not path.is_file():
        raise DataError(f"{path}: not found (expected <run>/<task>/{SAMPLES} as written by `sdft eval`/`sdft score`"
                        + ("; the run has generations.jsonl only — it did not finish scoring"
                           if (path.parent / "generations.jsonl").is_file() else "") + ")")
    return {p["index"]: p["output"] for p in read_predictions(path, None)}


def _pair(run_a: Path, run_b: Path, task: str) -> tuple[list[tuple[int, str, str]], dict]:
    for run in (run_a, run_b):
        if not Path(run).is_dir():
            raise DataError(f"{run}: eval run folder not found")
        if not (Path(run) / task).is_dir():
            have = sorted(p.name for p in Path(run).iterdir() if (p / SAMPLES).is_file())
            raise DataError(f"{run}: no task folder '{task}' (tasks with {SAMPLES}: {', '.join(have) or 'none'})")
    fa, fb = Path(run_a) / task / SAMPLES, Path(run_b) / task / SAMPLES
    a, b = _read_outputs(fa), _read_outputs(fb)
    common = sorted(a.keys() & b.keys())
    if not common:
        raise DataError(f"no common sample index between {fa} ({len(a)} samples) and {fb} ({len(b)} samples)")
    stats = {"file_a": str(fa), "file_b": str(fb), "n_a": len(a), "n_b": len(b), "n_paired": len(common)}
    return [(i, a[i], b[i]) for i in common], stats


def pair_eval_runs(run_a: str | Path, run_b: str | Path, task: str, *,
                   log: Callable[[str], None] | None = print) -> list[tuple[int, str, str]]:
    """``(index, output_a, output_b)`` for every sample index present in both runs' ``<task>/samples.jsonl``,
    in index order. Logs how many were paired; errors (``DataError``, naming files) on a missing folder, task or
    file, a malformed line, or no common index."""
    pairs, stats = _pair(Path(run_a), Path(run_b), task)
    if log is not None:
        log(f"{task}: paired {stats['n_paired']} samples ({stats['file_a']}: {stats['n_a']}, "
            f"{stats['file_b']}: {stats['n_b']})")
    return pairs


def shift_report(run_a: str | Path, run_b: str | Path, task: str = "advbench", out: str | Path | None = None, *,
                 embedder=None, metrics: Sequence[str] = METRICS, bleu_tokenize: str = "release",
                 rouge_tokenizer: str = "release", use_stemmer: bool = False,
                 log: Callable[[str], None] | None = print) -> dict:
    """Similarity of run ``run_b``'s answers to run ``run_a``'s (the reference: the seed model's eval run) on
    ``task``; with ``out``, also written to ``<out>/shift.json``. Returns ``{"task", "reference_run", "run",
    "pairing", "settings", "summary", "per_sample": [{"index", metric: value, ..}]}``."""
    pairs, stats = _pair(Path(run_a), Path(run_b), task)
    sim = similarity([p[1] for p in pairs], [p[2] for p in pairs], embedder=embedder, metrics=metrics,
                     bleu_tokenize=bleu_tokenize, rouge_tokenizer=rouge_tokenizer, use_stemmer=use_stemmer)
    per_sample = [{"index": idx, **{m: sim["per_sample"][m][k] for m in sim["per_sample"]}}
                  for k, (idx, _, _) in enumerate(pairs)]
    report = {"task": task, "reference_run": str(run_a), "run": str(run_b), "pairing": stats,
              "settings": sim["settings"], "summary": sim["summary"], "per_sample": per_sample}
    if out is not None:
        atomic_write_json(Path(out) / SHIFT_JSON, report)
    if log is not None:
        means = ", ".join(f"{m} {s['mean']:.4f}" for m, s in sim["summary"].items())
        log(f"{task}: {stats['n_paired']} paired samples ({stats['n_a']} / {stats['n_b']}); mean {means}")
    return report


# ----------------------------------------------------------------------------------------------------------------
# Fig. 9


ARM_COLOURS = ("#A16058", "#85BFAC", "#616C6E", "#5B7DB1", "#D9A441", "#8E6BB0")  # first two: the release's


def histogram(values_by_arm: dict[str, list[float]], path: str | Path, title: str, *,
              xlabel: str = "Embedding similarity to the seed model", bins: int = 30) -> Path:
    """Save a PNG of overlaid per-sample histograms, one per arm (shared bins), each arm's mean a dashed vertical
    line labelled with its value (paper Fig. 9). Uses matplotlib's Agg canvas, without touching pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arms = {k: [float(x) for x in v] for k, v in values_by_arm.items()}
    if not arms or any(not v for v in arms.values()):
        raise ValueError(f"histogram needs at least one arm and a value per arm, got "
                         f"{ {k: len(v) for k, v in arms.items()} }")
    lo = min(min(v) for v in arms.values())
    hi = max(max(v) for v in arms.values())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5 / bins, hi + 0.5 / bins
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    fig = Figure(figsize=(8, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (arm, v) in enumerate(arms.items()):
        colour = ARM_COLOURS[i % len(ARM_COLOURS)]
        mean = statistics.fmean(v)
        ax.hist(v, bins=edges, color=colour, alpha=0.6, label=f"{arm} (n={len(v)})")
        ax.axvline(mean, color=colour, linestyle="--", linewidth=2, label=f"{arm} mean {mean:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Count")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), format="png", dpi=120)
    return path
