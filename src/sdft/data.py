"""Loading task data: Alpaca/LLaMA-Factory JSON(L), ``messages`` and ShareGPT conversations, datasets by name
through a ``dataset_info.json``, HF ``datasets`` saved to disk, and column mappings.

Every row becomes an :class:`Example`. Earlier turns of a conversation are context only (``history``); the final
user turn is the instruction and the final assistant turn the response. A malformed file or row raises
:class:`DataError` naming the file, the row and the field, before any generation starts.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sdft.templates import Turn

# canonical field -> LLaMA-Factory column key
LF_KEYS = {"instruction": "prompt", "input": "query", "output": "response", "history": "history", "system": "system"}
# aliases tried (in order) when a file has no explicit column mapping
ALIASES = {
    "instruction": ("instruction", "question", "prompt"),
    "input": ("input", "query", "context"),
    "output": ("output", "answer", "response", "completion"),
}


class DataError(ValueError):
    """Bad input data; the message names the file, row and field."""


@dataclass(frozen=True)
class Example:
    index: int
    instruction: str
    input: str = ""
    output: str = ""
    history: tuple[Turn, ...] = ()
    system: str | None = None


@dataclass(frozen=True)
class Source:
    """Where rows come from: a file or folder, how to read it, and its column mapping."""

    path: Path
    formatting: str = "auto"  # auto | alpaca | sharegpt | messages
    columns: Mapping[str, str] = field(default_factory=dict)  # canonical field -> column in the file
    tags: Mapping[str, str] = field(default_factory=dict)  # sharegpt tags (role_tag, content_tag, user_tag, ...)
    name: str = ""


def builtin_data_dir() -> Path:
    """The compressed copies of the paper's datasets shipped inside the package."""
    return Path(str(resources.files("sdft") / "resources" / "data"))


def display_path(path: str | Path, root: str | Path | None = None) -> str:
    """A path as a report shows it, never the machine's absolute path: ``package:data/...`` for shipped data,
    relative to ``root`` (a run folder) or the working folder where it lies below them, else ``.../<name>``.

    >>> display_path(builtin_data_dir() / "gsm8k" / "gsm8k_test.json.gz")
    'package:data/gsm8k/gsm8k_test.json.gz'
    >>> display_path("/somewhere/else/rows.json")
    '.../rows.json'
    """
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    p = p.resolve()
    for base, prefix in ((builtin_data_dir(), "package:data/"), (root, ""), (Path.cwd(), "")):
        if base is None:
            continue
        try:
            return prefix + p.relative_to(Path(base).resolve()).as_posix()
        except ValueError:
            continue
    return f".../{p.name}"


# byte-order marks and the codec of the bytes after them (UTF-32 first: its LE mark starts with UTF-16's)
BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"), (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
        (codecs.BOM_UTF8, "utf-8", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
        (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"))


def decode_text(data: bytes, path: Path | str) -> str:
    """A data file's text: UTF-8 with or without a byte-order mark, or UTF-16/UTF-32 with one (line ends are left
    as they are: every reader here takes CRLF). Anything else is a :class:`DataError` naming the file and the
    byte offset (e.g. Latin-1 or Windows-1252 bytes, or UTF-16 without its mark)."""
    for bom, codec, name in BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(codec)
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: starts with a {name} byte-order mark but is not valid {name} ({e.reason} "
                                f"at byte {e.start + len(bom)})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}: {data[e.start:e.start + 4]!r}); "
                        "save it as UTF-8 (UTF-16 with a byte-order mark is read too)") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{path}: a NUL byte at byte {nul}: not UTF-8 text (UTF-16 without a byte-order mark?); "
                        "save it as UTF-8 (UTF-16 with a byte-order mark is read too)")
    return text


def read_text_file(path: Path) -> str:
    """The text of a data file, plain or ``.gz`` (see :func:`decode_text` for the encodings read)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            return decode_text(f.read(), path)
    return decode_text(path.read_bytes(), path)


def existing_path(path: Path) -> Path | None:
    """``path`` itself, or its ``.gz`` twin (how the package ships its data)."""
    if path.exists():
        return path
    gz = path.with_name(path.name + ".gz")
    return gz if gz.exists() else None


def parse_columns(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"instruction=question,output=answer"`` (LLaMA-Factory keys prompt/query/response also accepted)."""
    if not spec:
        return {}
    items = spec.items() if isinstance(spec, Mapping) else (kv.split("=", 1) for kv in spec.split(",") if kv)
    reverse = {v: k for k, v in LF_KEYS.items()} | {"messages": "messages"}
    out: dict[str, str] = {}
    for item in items:
        if len(item) != 2:
            raise DataError(f"column mapping '{spec}': expected FIELD=COLUMN pairs separated by commas")
        key, col = (s.strip() for s in item)
        canon = key if key in LF_KEYS or key == "messages" else reverse.get(key)
        if canon is None:
            raise DataError(f"column mapping: unknown field '{key}'; use instruction, input, output, history, "
                            "system or messages (or LLaMA-Factory's prompt, query, response)")
        out[canon] = col
    return out


def read_dataset_info(dataset_dir: Path) -> dict[str, Any]:
    info_path = existing_path(dataset_dir / "dataset_info.json")
    if info_path is None:
        raise DataError(f"{dataset_dir}: no dataset_info.json in this folder")
    try:
        info = json.loads(read_text_file(info_path))
    except json.JSONDecodeError as e:
        raise DataError(f"{info_path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(info, dict):
        raise DataError(f"{info_path}: expected an object of dataset entries")
    return info


def source_from_info(name: str, dataset_dir: Path) -> Source:
    info = read_dataset_info(dataset_dir)
    if name not in info:
        raise DataError(f"{dataset_dir / 'dataset_info.json'}: no dataset named '{name}'; known: {', '.join(sorted(info))}")
    entry = info[name]
    if not isinstance(entry, dict) or "file_name" not in entry:
        hub = entry.get("hf_hub_url") if isinstance(entry, dict) else None
        why = f"it points at the hub ({hub}); this tool never downloads" if hub else "it has no 'file_name'"
        raise DataError(f"{dataset_dir / 'dataset_info.json'}: dataset '{name}' cannot be loaded: {why}")
    path = existing_path(dataset_dir / entry["file_name"])
    if path is None:
        raise DataError(f"{dataset_dir / 'dataset_info.json'}: dataset '{name}': file {dataset_dir / entry['file_name']} not found")
    columns = parse_columns(entry.get("columns", {}))
    return Source(path, entry.get("formatting", "alpaca"), columns, entry.get("tags", {}), name)


def resolve_source(data: str, dataset_dir: str | Path | None = None, columns: str | Mapping[str, str] | None = None,
                   formatting: str = "auto") -> Source:
    """A file or HF ``save_to_disk`` folder; else a name in ``dataset_dir``'s dataset_info.json; else a name of
    the package's built-in data."""
    p = Path(data).expanduser()
    user_cols = parse_columns(columns)
    if p.exists():
        return Source(p, formatting, user_cols, {}, p.stem)
    search = [Path(dataset_dir).expanduser()] if dataset_dir else []
    search.append(builtin_data_dir())
    known: list[str] = []
    for d in search:
        if not d.is_dir():
            raise DataError(f"--dataset-dir {d}: folder not found")
        info = read_dataset_info(d)
        if data not in info:
            known += sorted(info)
            continue
        src = source_from_info(data, d)
        return Source(src.path, src.formatting if formatting == "auto" else formatting,
                      {**src.columns, **user_cols}, src.tags, src.name)
    where = " or ".join(str(d / "dataset_info.json") for d in search)
    raise DataError(f"{data}: no such file, and no dataset named '{data}' in {where}; "
                    f"known names: {', '.join(dict.fromkeys(known))}")


def load_records(path: Path) -> list[Any]:
    if path.is_dir():
        if not ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
            raise DataError(f"{path}: a folder, but not a dataset saved with datasets' save_to_disk")
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            split = "train" if "train" in ds else next(iter(ds))
            ds = ds[split]
        return [dict(r) for r in ds]
    try:
        text = read_text_file(path)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    if stem.endswith(".jsonl"):
        rows = []
        for lineno, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit inside a string
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {lineno}: invalid JSON ({e.msg}, column {e.colno})") from None
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if isinstance(data, dict):  # {"data": [...]} or {"train": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a JSON list of rows (or an object holding exactly one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    return data


def _detect(rows: Sequence[Any], src: Source) -> str:
    if src.formatting != "auto":
        return src.formatting
    first = rows[0] if rows else {}
    if isinstance(first, dict):
        conv = first.get(src.columns.get("messages", "messages")) or first.get("conversations")
        if isinstance(conv, list) and conv and isinstance(conv[0], dict):
            return "messages" if "role" in conv[0] else "sharegpt"
    return "alpaca"


class _RowReader:
    def __init__(self, path: Path, i: int, row: Any):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i}: expected an object, got {type(row).__name__}")
        self.path, self.i, self.row = path, i, row

    def fail(self, field_name: str, msg: str) -> DataError:
        return DataError(f"{self.path}: row {self.i}: field '{field_name}': {msg}")

    def text(self, column: str, required: bool) -> str:
        if column not in self.row or self.row[column] is None:
            if required:
                raise self.fail(column, "missing")
            return ""
        value = self.row[column]
        if not isinstance(value, str):
            raise self.fail(column, f"expected a string, got {type(value).__name__}")
        if required and not value.strip():
            raise self.fail(column, "empty")
        return value


def _alpaca_columns(rows: Sequence[Any], src: Source) -> dict[str, str]:
    cols = dict(src.columns)
    first = rows[0] if rows and isinstance(rows[0], dict) else {}
    for canon, names in ALIASES.items():
        if canon not in cols:
            cols[canon] = next((n for n in names if n in first), names[0])
    cols.setdefault("history", "history")
    cols.setdefault("system", "system")
    return cols


def _alpaca_example(r: _RowReader, cols: Mapping[str, str]) -> Example:
    history = []
    hist = r.row.get(cols["history"])
    if hist is not None:
        if not isinstance(hist, list):
            raise r.fail(cols["history"], "expected a list of [user, assistant] pairs")
        for j, pair in enumerate(hist):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
                raise r.fail(cols["history"], f"turn {j}: expected a [user, assistant] pair of strings")
            history.append(Turn(pair[0], pair[1]))
    system = r.text(cols["system"], False) or None
    return Example(r.i, r.text(cols["instruction"], True), r.text(cols["input"], False),
                   r.text(cols["output"], True), tuple(history), system)


def _conversation_example(r: _RowReader, src: Source, style: str) -> Example:
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
            "system_tag": "system"} if style == "messages" else {
            "role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
            "system_tag": "system"}
    tags.update(src.tags)
    col = src.columns.get("messages") or ("messages" if style == "messages" else "conversations")
    msgs = r.row.get(col)
    if not isinstance(msgs, list) or not msgs:
        raise r.fail(col, "expected a non-empty list of messages")
    system = None
    if isinstance(msgs[0], dict) and msgs[0].get(tags["role_tag"]) == tags["system_tag"]:
        system, msgs = msgs[0].get(tags["content_tag"]), msgs[1:]
    system = system or (r.row.get(src.columns["system"]) if "system" in src.columns else None)
    texts = []
    for j, m in enumerate(msgs):
        want = tags["user_tag"] if j % 2 == 0 else tags["assistant_tag"]
        if not isinstance(m, dict):
            raise r.fail(col, f"message {j}: expected an object")
        if m.get(tags["role_tag"]) != want:
            raise r.fail(col, f"message {j}: expected {tags['role_tag']} '{want}', got {m.get(tags['role_tag'])!r}")
        content = m.get(tags["content_tag"])
        if not isinstance(content, str):
            raise r.fail(col, f"message {j}: '{tags['content_tag']}' must be a string")
        texts.append(content)
    if len(texts) < 2 or len(texts) % 2:
        raise r.fail(col, "a conversation must alternate user/assistant and end with an assistant turn")
    if not texts[-1].strip():
        raise r.fail(col, f"message {len(texts) - 1}: the final assistant response is empty")
    history = tuple(Turn(texts[k], texts[k + 1]) for k in range(0, len(texts) - 2, 2))
    return Example(r.i, texts[-2], "", texts[-1], history, system)


def load_examples(src: Source) -> list[Example]:
    """All rows of a source as examples; raises :class:`DataError` on the first bad row."""
    rows = load_records(src.path)
    if not rows:
        raise DataError(f"{src.path}: no rows")
    style = _detect(rows, src)
    if style not in {"alpaca", "sharegpt", "messages"}:
        raise DataError(f"{src.path}: unknown formatting '{style}'; use alpaca, sharegpt or messages")
    if style == "alpaca":
        cols = _alpaca_columns(rows, src)
        return [_alpaca_example(_RowReader(src.path, i, row), cols) for i, row in enumerate(rows)]
    return [_conversation_example(_RowReader(src.path, i, row), src, style) for i, row in enumerate(rows)]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:  # a .gz is hashed uncompressed: the same data, shipped or not, is the same input
        with (gzip.open(f, "rb") if f.suffix == ".gz" else open(f, "rb")) as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


PAPER_CUT_THRESHOLD, PAPER_CUT_SIZE = 10_000, 2_000


def select_indices(n: int, *, subset: int | None = None, seed: int = 42, paper_cut: bool = True,
                   limit: int | None = None, shard: tuple[int, int] | None = None) -> list[int]:
    """Which rows to process, in processing order.

    ``subset``: a seeded random ``subset`` rows (the first ``subset`` of one seeded permutation, so a larger
    subset contains a smaller one). ``paper_cut``: as the paper, data over 10,000 rows are cut to a random
    2,000 when no subset is given. ``limit``: the first ``limit`` of the selection. ``shard=(i, n)``: every n-th
    row starting at i (deterministic, applied last).
    """
    if subset is None and paper_cut and n > PAPER_CUT_THRESHOLD:
        subset = PAPER_CUT_SIZE
    if subset is not None and subset < n:
        order = list(range(n))
        random.Random(seed).shuffle(order)
        idx = sorted(order[:subset])
    else:
        idx = list(range(n))
    if limit is not None:
        idx = idx[:limit]
    if shard is not None:
        i, k = shard
        idx = idx[i::k]
    return idx


def iter_jsonl(path: Path) -> Iterable[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
