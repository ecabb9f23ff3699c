"""Score a predictions file against a benchmark task (``sdft score``), without any model.

A predictions file is JSONL, one object per line: ``{"index": i, "output": "..."}`` where ``i`` is the 0-based
row of the task's data file (other keys are ignored; an optional ``prompt`` is recorded as the prompt used).
Scoring writes into ``out_dir``:

- ``samples.jsonl``: per prediction, in index order: ``index``, ``prompt``, ``output``, ``extracted``, ``gold``,
  ``correct`` (plus the task's details, e.g. HumanEval's sandbox ``status`` and ``stderr``);
- ``results.json``: ``task``, ``metric``, ``score`` (a fraction), ``n``, ``correct``, ``ci95`` ([lo, hi],
  Wilson), the predictions and data files, and for HumanEval the ``sandbox`` mode the programs ran in;
- ``results.md``: the same as a markdown table.

Without a ``prompt`` in the predictions, the recorded prompt is the task's raw, standard-layout prompt.

With ``id_column`` the predictions are keyed by a column of the data instead of the row number: each object
holds that column's name (or ``id``) with the row's value, e.g. ``{"task_id": "HumanEval/3", "output": ...}``
(ids are compared as text; a duplicate id in the data or an unknown one in the predictions is refused).
``task_data``/``task_files`` load the task's data from your file or define the task (:mod:`~sdft.evaluation.
task_data`, :mod:`~sdft.evaluation.task_file`), as ``sdft eval`` does.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sdft.data import DataError
from sdft.evaluation.benchmarks import EvalTask, Sample, resolve_data
from sdft.evaluation.sandbox import using_mode
from sdft.evaluation.tables import results_markdown
from sdft.stats import wilson_interval
from sdft.store import atomic_write_json, atomic_write_text



def read_predictions(path: str | Path, n_rows: int | None, data_name: str = "the data", *,
                     ids: Mapping[str, int] | None = None, id_column: str | None = None) -> list[dict]:
    """The prediction objects of a JSONL file, checked: each line an object with an integer ``index`` that is a
    row of the data (``0 <= index < n_rows``; any index when ``n_rows`` is None), given once, and a string
    ``output``. With ``ids`` (``{id: row}``), the row comes from the object's ``id_column`` (or ``id``) field
    instead. Errors name file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: predictions file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    seen: dict[int, int] = {}
    preds = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}: line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected an object with 'index' and 'output', got {type(obj).__name__}")
        if ids is not None:
            key = obj.get(id_column, obj.get("id")) if id_column else obj.get("id")
            if key is None or isinstance(key, (bool, list, dict)):
                raise DataError(f"{where}: field '{id_column or 'id'}': expected the row's id, got {key!r}")
            if str(key) not in ids:
                raise DataError(f"{where}: id {key!r} is not in column '{id_column}' of {data_name}")
            obj = {**obj, "index": ids[str(key)], "id": str(key)}
        index, output = obj.get("index"), obj.get("output")
        if isinstance(index, bool) or not isinstance(index, int):
            raise DataError(f"{where}: field 'index': expected an integer row number, got {index!r}")
        if n_rows is not None and not 0 <= index < n_rows:
            raise DataError(f"{where}: index {index} is not a row of {data_name} ({n_rows} rows, 0-based)")
        if index in seen:
            raise DataError(f"{where}: index {index} is a duplicate (already on line {seen[index]})")
        if not isinstance(output, str):
            raise DataError(f"{where}: field 'output': expected a string, got {type(output).__name__}")
        if "prompt" in obj and not isinstance(obj["prompt"], str):
            raise DataError(f"{where}: field 'prompt': expected a string, got {type(obj['prompt']).__name__}")
        seen[index] = lineno
        preds.append(obj)
    if not preds:
        raise DataError(f"{path}: no predictions")
    return sorted(preds, key=lambda p: p["index"])


def judge_one(task: EvalTask, output: str, sample: Sample) -> dict:
    """``correct`` and any task details for one output."""
    if task.judge is not None:
        return dict(task.judge(output, sample))
    return {"correct": bool(task.score(output, sample))}


def score_samples(task: EvalTask, pairs: Iterable[tuple[Sample, Mapping[str, Any]]], workers: int = 1) -> list[dict]:
    """Per-sample records for ``(sample, prediction)`` pairs, in the given order."""
    pairs = list(pairs)

    def record(pair: tuple[Sample, Mapping[str, Any]]) -> dict:
        sample, pred = pair
        output = pred["output"]
        prompt = pred.get("prompt")
        if prompt is None:
            prompt = task.prompt(sample, prompt_format="raw", tokenizer=None, layout="standard")
        verdict = judge_one(task, output, sample)
        return {"index": sample.index, "prompt": prompt, "output": output, "extracted": task.extract(output),
                "gold": sample.gold, "correct": bool(verdict.pop("correct")), **verdict}

    if workers > 1 and len(pairs) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # the work runs in sandbox subprocesses
            return list(pool.map(record, pairs))
    return [record(p) for p in pairs]


def summarize(task: EvalTask, records: list[dict], **extra: Any) -> dict:
    """``results.json`` content for scored records."""
    n = len(records)
    k = sum(r["correct"] for r in records)
    lo, hi = wilson_interval(k, n)
    return {"task": task.name, "metric": task.metric, "score": k / n if n else 0.0, "n": n, "correct": k,
            "ci95": [lo, hi], **extra}


def default_workers(task: EvalTask) -> int:
    return max(1, min(2, os.cpu_count() or 1)) if task.executes_code else 1


def score_predictions(task_name: str, predictions_path: str | Path, out_dir: str | Path,
                      data_path: str | Path | None = None, *, workers: int | None = None,
                      task_data: Sequence[str] = (), task_files: Sequence[str | Path] = (),
                      id_column: str | None = None, sandbox: str | None = None) -> dict:
    """Score a predictions JSONL for ``task_name``; write samples.jsonl, results.json and results.md into
    ``out_dir`` and return the results dict. ``data_path`` overrides the task's shipped data file; ``task_data``
    (``TASK=PATH[:COLUMNS]``) and ``task_files`` as in ``sdft eval``; ``id_column`` keys predictions by a column;
    ``sandbox``: how HumanEval programs run (``bwrap`` | ``guard``; ``None``: :mod:`sdft.evaluation.sandbox`'s
    default, bwrap)."""
    from sdft.evaluation.task_data import data_ids, load_samples, parse_task_data
    from sdft.evaluation.task_file import resolve_tasks

    task = resolve_tasks([task_name], task_files, task_data)[0]
    mapped = parse_task_data(task_data).get(task.name)
    if mapped is not None and data_path is not None:
        raise ValueError("give the data either with --data or with --task-data, not both")
    data_file = mapped.path if mapped else resolve_data(data_path, task.data_file)
    samples = load_samples(task, mapped) if mapped else task.load(data_path)
    ids = data_ids(data_file, id_column) if id_column else None
    preds = read_predictions(predictions_path, len(samples), str(data_file), ids=ids, id_column=id_column)
    with using_mode(sandbox):
        records = score_samples(task, ((samples[p["index"]], p) for p in preds),
                                workers if workers is not None else default_workers(task))
    if ids is not None:
        for rec, p in zip(records, preds):
            rec["id"] = p["id"]
    extra = {"columns": dict(mapped.columns)} if mapped and mapped.columns else {}
    return write_results(out_dir, task, records, predictions=str(predictions_path), data=str(data_file),
                         **extra, **({"id_column": id_column} if id_column else {}))


def write_results(out_dir: str | Path, task: EvalTask, records: list[dict], **extra: Any) -> dict:
    """Write samples.jsonl, results.json (with ``extra`` keys) and results.md; return the results dict."""
    modes = sorted({r["sandbox"] for r in records if "sandbox" in r})  # code tasks: the sandbox they ran in
    results = summarize(task, records, **extra, **({"sandbox": ",".join(modes)} if modes else {}))
    out = Path(out_dir)
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", results_markdown([results]))
    return results
