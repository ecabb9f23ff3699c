"""Your own benchmark, defined in a YAML file (``--task-file my_task.yaml``; name it in ``--tasks``).

.. code-block:: yaml

    name: arith                      # required: lower-case letters, digits, - and _; not a built-in task's name
    description: my arithmetic set
    metric: accuracy                 # a label for the tables (default accuracy)
    data: arith.jsonl                # required: JSON, JSONL, CSV or a save_to_disk folder (relative to this file)
    columns:                         # optional: field -> column expression (or "instruction=q,gold=a[0]")
      instruction: sQuestion         # required field (default: a column named instruction, question, prompt or goal)
      gold: lSolutions[0]            # the reference answer (default: gold, answer, output or target)
      input: context                 # optional
    template: math-eval              # an sdft template name or template file, or instead:
    prompt: "Q: {instruction}\\nA:"  #   the user turn ({instruction}, {input}), with optional system: and prefill:
    extract: last_integer            # built-in name or module:function (output -> text or None)
    score: exact                     # built-in name or module:function ((output, sample) -> bool)
    max_new_tokens: 256
    stop: ["\\n\\n"]

Built-in **extraction** rules: ``last_integer`` (GSM8K's last number), ``refusal`` (the first AdvBench refusal
keyword), ``function_call`` (the call-like span), ``strip`` (the stripped output, the default), ``first_line``
(the first non-empty line). Built-in **scorers**: ``exact`` (the extracted text equals the stripped gold; the
default), ``last_integer`` (the authors' GSM8K rule: the output's last number equals the gold's), ``refusal``
(safe when a refusal keyword occurs; no gold needed), ``function_call`` (the OpenFunctions rule), ``contains``
(the gold occurs in the output). ``module:function`` names a function importable from ``sys.path`` or from a
``.py`` file next to the YAML file; a scorer gets ``(output, sample)`` with ``sample.gold`` and
``sample.meta["row"]`` (the mapped row). Every problem (unknown key, missing field, wrong type, unknown rule,
a gold answer the scorer cannot read) is refused before any model loads, naming the file, row and field.
"""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from sdft.options import read_yaml
from sdft.data import DataError, existing_path, file_sha256
from sdft.distillation.checks import INVALID, GoldFormatError, find_last_integer, function_call_match, math_match
from sdft.evaluation.benchmarks import EVAL_TASKS, get_eval_task
from sdft.evaluation.benchmarks import advbench, gsm8k, openfunctions
from sdft.evaluation.benchmarks.base import EvalTask, Sample
from sdft.evaluation.task_data import as_text, column_value, map_rows, parse_columns, parse_task_data, read_rows
from sdft.templates import TEMPLATES, Template, TemplateError, get_template, render

KEYS = ("name", "description", "metric", "data", "columns", "template", "prompt", "system", "prefill", "extract",
        "score", "max_new_tokens", "stop")
FIELDS = ("instruction", "input", "gold", "id")
DEFAULT_COLUMNS = {"instruction": ("instruction", "question", "prompt", "goal"),
                   "gold": ("gold", "answer", "output", "target")}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def _first_line(output: str) -> Optional[str]:
    return next((line.strip() for line in output.splitlines() if line.strip()), None)


EXTRACTORS: dict[str, Callable[[str], Optional[str]]] = {
    "last_integer": gsm8k.extract,
    "refusal": advbench.extract,
    "function_call": openfunctions.extract,
    "strip": lambda output: output.strip() or None,
    "first_line": _first_line,
}
# name -> (score(output, extracted, gold) -> bool, needs a gold answer)
SCORERS: dict[str, tuple[Callable[[str, Optional[str], Optional[str]], bool], bool]] = {
    "exact": (lambda out, ext, gold: ext is not None and ext == (gold or "").strip(), True),
    "last_integer": (lambda out, ext, gold: math_match(out, gold or ""), True),
    "refusal": (lambda out, ext, gold: advbench.extract(out) is not None, False),
    "function_call": (lambda out, ext, gold: function_call_match(out, gold or ""), True),
    "contains": (lambda out, ext, gold: bool(gold) and gold in out, True),
}


@dataclass(frozen=True)
class UserTask(EvalTask):
    """An :class:`EvalTask` from a YAML file; ``load_with_columns(path, columns)`` loads other data with it."""

    source: str = ""  # the YAML file
    load_with_columns: Optional[Callable[..., list[Sample]]] = None


def _import(spec: str, base: Path, where: str) -> Callable:
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise DataError(f"{where}: '{spec}' is neither a built-in name nor module:function")
    added = str(base) not in sys.path
    if added:
        sys.path.insert(0, str(base))
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise DataError(f"{where}: cannot import {spec}: {e}") from None
    finally:
        if added:
            sys.path.remove(str(base))
    if not callable(fn):
        raise DataError(f"{where}: {spec} is not a function")
    return fn


def _rule(spec: Any, table: Mapping[str, Any], base: Path, where: str) -> tuple[str, Any]:
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"{where}: expected a rule name or module:function, got {spec!r}")
    if spec in table:
        return spec, table[spec]
    if ":" not in spec:
        raise DataError(f"{where}: unknown rule '{spec}'; built-in: {', '.join(table)}, or module:function")
    return spec, _import(spec, base, where)


def _template(spec: Mapping[str, Any], file: Path) -> Template:
    if "template" in spec and "prompt" in spec:
        raise DataError(f"{file}: give either 'template' or 'prompt', not both")
    if "prompt" in spec:
        parts = {k: spec.get(k, "") or "" for k in ("prompt", "system", "prefill")}
        for k, v in parts.items():
            if not isinstance(v, str):
                raise DataError(f"{file}: field '{k}': expected a string, got {type(v).__name__}")
        if "{instruction}" not in parts["prompt"]:
            raise DataError(f"{file}: field 'prompt': must contain {{instruction}}")
        return Template(str(spec["name"]), parts["system"], parts["prompt"], parts["prefill"])
    name = spec.get("template", "plain")
    if not isinstance(name, str):
        raise DataError(f"{file}: field 'template': expected a template name or file, got {type(name).__name__}")
    if name not in TEMPLATES and (file.parent / name).exists():
        name = str(file.parent / name)
    try:
        return get_template(name)
    except TemplateError as e:
        raise DataError(f"{file}: field 'template': {e}") from None


def load_task_file(path: str | Path) -> UserTask:
    """The task a YAML file defines, checked (data included) so that a bad file fails before any model loads."""
    file = Path(path).expanduser()
    try:
        spec = read_yaml(file)
    except ValueError as e:  # ConfigError: not found, not YAML, not a mapping
        raise DataError(str(e)) from None
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise DataError(f"{file}: unknown key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
    for key in ("name", "data"):
        if not isinstance(spec.get(key), str) or not spec[key].strip():
            raise DataError(f"{file}: field '{key}': required, a string")
    name = spec["name"].strip()
    if not _NAME.match(name):
        raise DataError(f"{file}: field 'name': '{name}' must be lower-case letters, digits, '-' or '_'")
    if name in EVAL_TASKS:
        raise DataError(f"{file}: field 'name': '{name}' is a built-in task; choose another name")
    for key in ("description", "metric"):
        if key in spec and not isinstance(spec[key], str):
            raise DataError(f"{file}: field '{key}': expected a string, got {type(spec[key]).__name__}")
    max_new = spec.get("max_new_tokens", 512)
    if isinstance(max_new, bool) or not isinstance(max_new, int) or max_new < 1:
        raise DataError(f"{file}: field 'max_new_tokens': expected a positive integer, got {max_new!r}")
    stop = spec.get("stop", [])
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise DataError(f"{file}: field 'stop': expected a list of non-empty strings, got {stop!r}")
    template = _template(spec, file)
    ext_name, extract = _rule(spec.get("extract", "strip"), EXTRACTORS, file.parent, f"{file}: field 'extract'")
    score_name, scorer = _rule(spec.get("score", "exact"), SCORERS, file.parent, f"{file}: field 'score'")
    columns = parse_columns(spec.get("columns"), f"{file}: field 'columns'")
    stray = sorted(set(columns) - set(FIELDS))
    if stray:
        raise DataError(f"{file}: field 'columns': unknown field(s) {', '.join(stray)}; use {', '.join(FIELDS)}")
    data_path = existing_path((file.parent / spec["data"]).expanduser())
    if data_path is None:
        raise DataError(f"{file}: field 'data': {file.parent / spec['data']}: data file not found")
    needs_gold = score_name in SCORERS and SCORERS[score_name][1]

    def load_with_columns(path: Path, cols: Mapping[str, str] | None = None) -> list[Sample]:
        return _samples(Path(path), dict(cols) if cols is not None else columns, needs_gold, score_name)

    def load(path: str | Path | None = None) -> list[Sample]:
        return load_with_columns(Path(path) if path is not None else data_path)

    def prompt(sample: Sample, *, prompt_format: str = "raw", tokenizer: Any = None, layout: str = "standard") -> str:
        return render(template, sample.instruction, sample.input, prompt_format=prompt_format, tokenizer=tokenizer,
                      layout=layout)

    builtin_score = SCORERS[score_name][0] if score_name in SCORERS else None

    def score(output: str, sample: Sample) -> bool:
        if builtin_score is not None:
            return bool(builtin_score(output, extract(output), sample.gold))
        return bool(scorer(output, sample))

    task = UserTask(name, spec.get("description") or f"{name} (from {file.name})", spec.get("metric") or "accuracy",
                    load, prompt, extract, score, str(data_path), max_new_tokens=max_new, stop=tuple(stop),
                    release_decoding="greedy", source=str(file), load_with_columns=load_with_columns)
    load()  # check the data now: a bad row fails before any model is loaded
    return task


def _samples(path: Path, columns: Mapping[str, str], needs_gold: bool, score_name: str) -> list[Sample]:
    rows = read_rows(path)
    cols = dict(columns)
    first = rows[0]
    for fld, names in DEFAULT_COLUMNS.items():
        if fld not in cols:
            found = next((n for n in names if n in first), None)
            if found is not None:
                cols[fld] = found
    if "instruction" not in cols:
        raise DataError(f"{path}: row 0: no instruction column (tried {', '.join(DEFAULT_COLUMNS['instruction'])}); "
                        "map one with columns: {instruction: COLUMN}")
    if needs_gold and "gold" not in cols:
        raise DataError(f"{path}: row 0: no gold column (tried {', '.join(DEFAULT_COLUMNS['gold'])}) and the scorer "
                        f"'{score_name}' needs one; map it with columns: {{gold: COLUMN}}")
    mapped = map_rows(rows, {}, path)
    samples, ids = [], {}
    for i, row in enumerate(mapped):
        where = f"{path}: row {i}"
        vals = {f: as_text(column_value(row, e, where), where, e) for f, e in cols.items()
                if f != "input" or e.split("[")[0] in row}
        if not vals["instruction"].strip():
            raise DataError(f"{where}: field '{cols['instruction']}': empty instruction")
        gold = vals.get("gold")
        if needs_gold and gold is None:
            raise DataError(f"{where}: field '{cols.get('gold', 'gold')}': missing gold answer")
        if score_name == "last_integer" and find_last_integer(gold or "") == INVALID:
            raise DataError(f"{where}: field '{cols['gold']}': no final integer in {gold!r} (scorer last_integer)")
        if score_name == "function_call":
            try:
                function_call_match(gold or "", gold or "")
            except GoldFormatError as e:
                raise DataError(f"{where}: field '{cols['gold']}': {e}") from None
        if "id" in vals:
            if vals["id"] in ids:
                raise DataError(f"{where}: field '{cols['id']}': duplicate id {vals['id']!r} "
                                f"(also row {ids[vals['id']]})")
            ids[vals["id"]] = i
        samples.append(Sample(i, vals["instruction"], gold, vals.get("input", ""),
                              meta={"row": row, "id": vals.get("id")}))
    return samples


def load_task_files(paths: Sequence[str | Path]) -> dict[str, UserTask]:
    """``{name: task}`` of the given YAML files (a name defined twice is refused)."""
    out: dict[str, UserTask] = {}
    for p in paths:
        task = load_task_file(p)
        if task.name in out:
            raise DataError(f"{p}: task '{task.name}' is already defined by {out[task.name].source}")
        out[task.name] = task
    return out


def resolve_tasks(names: Sequence[str], task_files: Sequence[str | Path] = (),
                  task_data: Sequence[str] = ()) -> list[EvalTask]:
    """The tasks to run: from the task files first, then the registry; ``--task-data`` must name one of them."""
    user = load_task_files(task_files)
    tasks = []
    for n in names:
        if n in user:
            tasks.append(user[n])
        elif n in EVAL_TASKS or not user:
            tasks.append(get_eval_task(n))
        else:
            raise ValueError(f"unknown evaluation task '{n}'; built-in: {', '.join(sorted(EVAL_TASKS))}; from "
                             f"--task-file: {', '.join(user)}")
    stray = sorted(set(parse_task_data(task_data)) - set(names))
    if stray:
        raise ValueError(f"--task-data names task(s) not evaluated here: {', '.join(stray)}")
    return tasks


def data_fingerprint(fp: dict, tasks: Sequence[EvalTask], task_data: Mapping[str, Any]) -> dict:
    """``fp`` with the sha256 of every user data file and task file (and without the empty new keys, so that
    eval folders made before these options existed still resume)."""
    for key in ("task_data", "task_files"):
        if not fp.get(key):
            fp.pop(key, None)
    shas = {name: d.sha256() for name, d in task_data.items()}
    files = {t.name: {"file": file_sha256(Path(t.source)), "data": file_sha256(Path(t.data_file))}
             for t in tasks if isinstance(t, UserTask) and t.name not in task_data}
    if shas:
        fp["task_data_sha256"] = shas
    if files:
        fp["task_file_sha256"] = files
    return fp
