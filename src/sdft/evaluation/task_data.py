"""A registered benchmark on your own file: ``--task-data TASK=PATH[:COLUMNS]`` (``sdft eval`` and ``sdft score``).

**Files.** JSON (a list of objects, or an object holding one list), JSONL, CSV (a header row; every value is
text) or a folder written by ``datasets``' ``save_to_disk``; plain or ``.gz``.

**Columns.** ``COLUMNS`` maps the field a task reads to an expression on your rows: ``NAME=COLUMN`` pairs
separated by commas, where ``COLUMN`` may index into lists, ``lSolutions[0]`` (negative indices count from the
end). A MultiArith file in its original form (``sQuestion``, ``lSolutions: [10.0]``) is read with
``multiarith=MultiArith.json:question=sQuestion,answer=lSolutions[0]``. Mapped values must be text or numbers
(a whole float such as ``10.0`` becomes ``"10"``); columns not named pass through unchanged. The fields are the
ones the task's own loader reads: ``instruction``/``question`` and ``output``/``answer`` for gsm8k, multiarith,
openfunctions and alpacaeval; ``goal`` (and ``target``) for the advbench tasks; HumanEvalPack's ``instruction``,
``prompt``, ``declaration``, ``test``, ``entry_point`` for humaneval. The mapped rows are handed to the task's
own loader, so every check it makes still applies (row numbers are your file's; errors name your file).

**Fingerprint.** The file's sha256 (a folder: all its files; ``.gz``: the uncompressed bytes) enters the eval
fingerprint, so an eval folder is never continued on other data.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from sdft.data import DataError, existing_path, file_sha256, load_records, read_text_file
from sdft.evaluation.benchmarks.base import EvalTask, Sample

_EXPR = re.compile(r"^([^\[\]=,]+?)((?:\[-?\d+\])*)$")
_INDEX = re.compile(r"\[(-?\d+)\]")


def parse_columns(spec: str | Mapping[str, str] | None, where: str = "column mapping") -> dict[str, str]:
    """``"question=sQuestion,answer=lSolutions[0]"`` (or a mapping) -> ``{field: column expression}``.

    >>> parse_columns("question=sQuestion,answer=lSolutions[0]")
    {'question': 'sQuestion', 'answer': 'lSolutions[0]'}
    """
    if not spec:
        return {}
    if isinstance(spec, Mapping):
        items = [(str(k), str(v)) for k, v in spec.items()]
    else:
        items = []
        for part in (p for p in spec.split(",") if p.strip()):
            if "=" not in part:
                raise DataError(f"{where}: '{part}' is not FIELD=COLUMN (pairs separated by commas)")
            k, v = part.split("=", 1)
            items.append((k, v))
    out: dict[str, str] = {}
    for k, v in items:
        k, v = k.strip(), v.strip()
        if not k or not _EXPR.match(v):
            raise DataError(f"{where}: '{k}={v}': expected FIELD=COLUMN with COLUMN a column name, optionally "
                            "indexed as column[0]")
        if k in out:
            raise DataError(f"{where}: field '{k}' is mapped twice")
        out[k] = v
    return out


def column_value(row: Mapping[str, Any], expr: str, where: str) -> Any:
    """The value of ``expr`` (``name`` or ``name[i][j]``) in ``row``; a missing column or a bad index is a
    :class:`DataError` naming ``where`` (file and row) and the column.

    >>> column_value({"l": [[1, 2]]}, "l[0][-1]", "f: row 0")
    2
    """
    m = _EXPR.match(expr)
    if not m:
        raise DataError(f"{where}: column '{expr}': not a column name or column[index]")
    name = m.group(1).strip()
    if name not in row:
        raise DataError(f"{where}: field '{expr}': missing (the row has {', '.join(map(str, row)) or 'no columns'})")
    value = row[name]
    for k in (int(i) for i in _INDEX.findall(m.group(2))):
        if isinstance(value, str) and value.lstrip().startswith("["):  # a list written as text (CSV)
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{where}: field '{expr}': cannot index [{k}] into a {type(value).__name__}")
        if not -len(value) <= k < len(value):
            raise DataError(f"{where}: field '{expr}': index [{k}] out of range (the list has {len(value)} items)")
        value = value[k]
    return value


def as_text(value: Any, where: str, expr: str) -> str:
    """A mapped value as text: strings as they are, numbers written out (``10.0`` -> ``"10"``).

    >>> as_text(10.0, "", ""), as_text(2.5, "", ""), as_text(7, "", "")
    ('10', '2.5', '7')
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float)):
        got = "null" if value is None else type(value).__name__
        raise DataError(f"{where}: field '{expr}': expected text or a number, got {got}")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def is_csv(path: Path | str) -> bool:
    name = Path(path).name
    return name.endswith(".csv") or name.endswith(".csv.gz")


def read_rows(path: Path) -> list[dict]:
    """The rows of a JSON, JSONL, CSV or ``save_to_disk`` data set, each an object (errors name file and row)."""
    if is_csv(path):
        try:
            text = read_text_file(path)
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read: {e}") from None
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames:
            raise DataError(f"{path}: a CSV file needs a header row with the column names")
        rows: list[Any] = list(reader)
    else:
        rows = load_records(path)
    if not rows:
        raise DataError(f"{path}: no rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i}: expected an object with named columns, got {type(row).__name__}")
    return rows


def map_rows(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str], file: Path | str) -> list[dict]:
    """Each row with the mapped fields added as text (unmapped columns pass through)."""
    out = []
    for i, row in enumerate(rows):
        new = dict(row)
        for name, expr in columns.items():
            where = f"{file}: row {i}"
            new[name] = as_text(column_value(row, expr, where), where, expr)
        out.append(new)
    return out


def data_ids(path: Path, expr: str) -> dict[str, int]:
    """``{id: row}`` from the column ``expr`` of a data file; a missing or duplicate id names file, row and field."""
    ids: dict[str, int] = {}
    for i, row in enumerate(read_rows(path)):
        where = f"{path}: row {i}"
        key = as_text(column_value(row, expr, where), where, expr)
        if key in ids:
            raise DataError(f"{where}: field '{expr}': duplicate id {key!r} (also row {ids[key]})")
        ids[key] = i
    return ids


@dataclass(frozen=True)
class TaskData:
    """One ``--task-data`` entry: which task, which file, which column mapping."""

    task: str
    path: Path
    columns: Mapping[str, str] = field(default_factory=dict)

    def sha256(self) -> str:
        return file_sha256(self.path)


def parse_task_data(specs: Sequence[str]) -> dict[str, TaskData]:
    """``["gsm8k=PATH", "multiarith=PATH:question=sQuestion,answer=lSolutions[0]"]`` -> ``{task: TaskData}``.
    The columns follow the last ``:`` whose remainder holds an ``=`` (so a path may itself contain a colon)."""
    out: dict[str, TaskData] = {}
    for spec in specs:
        task, eq, rest = spec.partition("=")
        task = task.strip()
        if not eq or not task or not rest.strip():
            raise DataError(f"--task-data {spec!r}: expected TASK=PATH[:COLUMNS]")
        path, columns = rest, ""
        cut = rest.rfind(":")
        if cut > 0 and "=" in rest[cut + 1:]:
            path, columns = rest[:cut], rest[cut + 1:]
        p = Path(path.strip()).expanduser()
        found = existing_path(p)
        if found is None:
            raise DataError(f"--task-data {task}: {p}: data file not found")
        if task in out:
            raise DataError(f"--task-data: task '{task}' is given twice")
        out[task] = TaskData(task, found, parse_columns(columns, f"--task-data {task}: columns"))
    return out


def load_samples(task: EvalTask, data: TaskData | None = None) -> list[Sample]:
    """The task's samples: its own data, or ``data`` (any format, mapped columns) through the task's loader."""
    if data is None:
        return task.load()
    own = getattr(task, "load_with_columns", None)  # a task defined in a YAML file (sdft.evaluation.task_file)
    if own is not None:
        return own(data.path, data.columns or None)
    native = is_csv(data.path) if is_csv(task.data_file) else data.path.name.endswith((".json", ".json.gz"))
    if native and not data.columns:
        return task.load(data.path)
    rows = map_rows(read_rows(data.path), data.columns, data.path)
    mapping = ",".join(f"{k}={v}" for k, v in data.columns.items())
    label = f"{data.path}" + (f" (columns {mapping})" if mapping else "")
    with tempfile.TemporaryDirectory(prefix="sdft-task-data-") as d:
        tmp = Path(d) / ("data.csv" if is_csv(task.data_file) else "data.json")
        if is_csv(task.data_file):
            names = list(dict.fromkeys(k for r in rows for k in r))
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=names)
            writer.writeheader()
            writer.writerows(rows)
            tmp.write_text(buf.getvalue(), encoding="utf-8")
        else:
            tmp.write_text(json.dumps(rows, ensure_ascii=False, default=str), encoding="utf-8")
        try:
            return task.load(tmp)
        except DataError as e:
            raise DataError(str(e).replace(str(tmp), label)) from None
