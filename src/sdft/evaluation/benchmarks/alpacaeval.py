"""AlpacaEval (805 instructions): helpfulness as the win rate against text-davinci-003's reference answers.

The model answers each instruction in the Alpaca prompt (as the paper's evaluation did); a judge then compares
each answer with the reference pairwise, in both orders (:mod:`sdft.evaluation.judge`). There is no per-answer rule, so the
task cannot be scored sample by sample: :data:`TASKS` holds a :class:`JudgedEvalTask`, an :class:`EvalTask` with
an ``aggregate`` hook ``(records, samples, judge, out_dir, **extra) -> results`` that the evaluation step calls
after generation instead of ``score``. Calling ``score`` raises :class:`JudgeRequired` with what to run.

Data: the shipped ``alpaca_eval.json.gz`` (``instruction``, ``output``) or a user file of the same shape;
``../shared/data/alpaca_eval/alpaca_eval_v1_text_davinci_003.json`` also has ``dataset`` (helpful_base, oasst,
koala, selfinstruct, vicuna) and ``generator``, which go into ``model_outputs.json`` when present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from sdft.data import DataError
from sdft.templates import TEMPLATES, render
from sdft.evaluation.benchmarks.base import EvalTask, Sample, read_text, resolve_data

DATA_FILE = "alpaca_eval.json"
REFERENCE_GENERATOR = "text_davinci_003"


class JudgeRequired(RuntimeError):
    """A judged task was asked for a per-sample score."""


@dataclass(frozen=True)
class JudgedEvalTask(EvalTask):
    """An evaluation task scored over all answers at once by a judge (see the module doc)."""

    aggregate: Optional[Callable[..., dict]] = None


def load(path: str | Path | None = None) -> list[Sample]:
    """The instructions, with the reference answer as ``gold`` (and ``dataset``/``generator`` in ``meta``).

    >>> s = load()
    >>> len(s), s[0].instruction[:40], s[0].gold[:20]
    (805, 'What are the names of some famous actors', 'Some famous actors t')
    """
    file = resolve_data(path, DATA_FILE)
    try:
        rows = json.loads(read_text(file))
    except json.JSONDecodeError as e:
        raise DataError(f"{file}: invalid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{file}: expected a non-empty JSON list of {{instruction, output}} objects")
    samples = []
    for i, row in enumerate(rows):
        for key in ("instruction", "output"):
            if not isinstance(row, dict) or not isinstance(row.get(key), str):
                raise DataError(f"{file}: row {i}: field '{key}': expected a string")
        meta = {k: row[k] for k in ("dataset", "generator") if isinstance(row.get(k), str)}
        samples.append(Sample(i, row["instruction"], row["output"], meta=meta))
    return samples


def prompt(sample: Sample, *, prompt_format: str = "raw", tokenizer: Any = None, layout: str = "standard") -> str:
    """The Alpaca prompt with the instruction.

    >>> prompt(Sample(0, "Say hi", "Hi"))[-39:]
    '### Instruction:\\nSay hi\\n\\n### Response:\\n'
    """
    return render(TEMPLATES["alpaca"], sample.instruction, sample.input, prompt_format=prompt_format,
                  tokenizer=tokenizer, layout=layout)


def extract(output: str) -> Optional[str]:
    """The answer the judge sees: the output, whitespace-stripped (None when empty)."""
    return output.strip() or None


def score(output: str, sample: Sample) -> bool:
    raise JudgeRequired("alpacaeval is scored pairwise by a judge, not per answer: run `sdft eval --tasks "
                        "alpacaeval --judge MODEL`, or call sdft.evaluation.benchmarks.alpacaeval.aggregate(records, samples, "
                        "judge, out_dir) on the generations")


def aggregate(records: Sequence[dict], samples: Sequence[Sample], judge, out_dir: str | Path, *,
              unparseable: str = "exclude", generator: str = "model", **extra: Any) -> dict:
    """Judge the answers (``records[i]["output"]`` answers ``samples[i]``) against the references and write
    ``samples.jsonl``, ``results.json``, ``results.md`` and ``model_outputs.json`` into ``out_dir``; the judge's
    raw verdicts go to ``out_dir/judge-<fingerprint>/judgements.jsonl`` (resumable; one folder per judge, so
    changing the judge model, backend, prompt file or decoding never reuses old verdicts)."""
    from sdft.evaluation.judge import judge_pairs, summarize_pairs, write_model_outputs
    from sdft.evaluation.judge_trust import trust
    from sdft.evaluation.tables import results_markdown
    from sdft.store import atomic_write_json, atomic_write_text

    if len(records) != len(samples):
        raise ValueError(f"{len(records)} answers for {len(samples)} samples")
    out = Path(out_dir)
    jdir = out / f"judge-{judge.fingerprint()}"
    pairs = [{"index": s.index, "instruction": s.instruction, "model": r["output"].strip(), "reference": s.gold}
             for r, s in zip(records, samples)]
    judged = judge_pairs(judge, pairs, jdir / "judgements.jsonl")
    rows = []
    for j, r, s, p in zip(judged, records, samples, pairs):
        rows.append({"index": s.index, "prompt": r.get("prompt"), "output": r["output"], "extracted": p["model"],
                     "gold": s.gold, "model_chars": len(p["model"]), "reference_chars": len(s.gold or ""),
                     "finish_reason": r.get("finish_reason"), **j})
    stats = summarize_pairs(rows, unparseable)
    for row in rows:
        row["correct"] = row["score"]
    trusted = trust(stats, judge)  # judge_trusted: false when position-biased here or failed `sdft judge-check`
    stats["warnings"] += [r for r in trusted["judge_untrusted_reasons"] if "judge-check" in r]
    results = {"task": "alpacaeval", "metric": "win rate", **stats, **trusted, "judge": judge.identity(),
               "reference_generator": REFERENCE_GENERATOR, **extra}
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows))
    for d in (out, jdir):
        atomic_write_json(d / "results.json", results)
        atomic_write_text(d / "results.md", results_markdown([results]))
    write_model_outputs(out / "model_outputs.json",
                        ({"instruction": s.instruction, "output": p["model"], "dataset": s.meta.get("dataset")}
                         for p, s in zip(pairs, samples)), generator)
    return results


TASKS = (
    JudgedEvalTask("alpacaeval", "AlpacaEval: win rate against text-davinci-003 (805 instructions), pairwise judge",
                   "win rate", load, prompt, extract, score, DATA_FILE + ".gz", aggregate=aggregate),
)
