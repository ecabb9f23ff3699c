"""The types every benchmark file shares (kept apart from the registry so that no file imports back from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from sdft.data import DataError, Example, Source, builtin_data_dir, existing_path, load_examples, read_text_file


@dataclass(frozen=True)
class Sample:
    """One benchmark item. ``index`` is its 0-based row in the data file (the key of a predictions file)."""

    index: int
    instruction: str  # the text placed in the template's {instruction}
    gold: Optional[str] = None  # the reference the scorer compares with, as shown in reports
    input: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)  # whatever else score needs (label, tests, ...)


@dataclass(frozen=True)
class EvalTask:
    name: str
    description: str
    metric: str  # what the score means: "accuracy", "safe rate", "pass@1"
    load: Callable[..., list[Sample]]
    prompt: Callable[..., str]
    extract: Callable[[str], Optional[str]]
    score: Callable[[str, Sample], bool]
    data_file: str  # the shipped copy, relative to sdft.data.builtin_data_dir()
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()  # stop strings for the backend (the output is cut before them)
    release_decoding: str = "sampling"  # how the authors decoded: "sampling" (LLaMA-Factory defaults) or "greedy"
    judge: Optional[Callable[[str, Sample], dict]] = None  # optional per-sample details (e.g. sandbox status)
    executes_code: bool = False  # score runs a program: worth parallel workers


def resolve_data(path: str | Path | None, default: str) -> Path:
    """A user path (plain or .gz), else the shipped copy; a clear error when neither exists."""
    p = Path(path).expanduser() if path is not None else builtin_data_dir() / default
    found = existing_path(p)
    if found is None:
        raise DataError(f"{p}: data file not found")
    return found


def read_text(path: Path) -> str:
    """The whole (optionally gzip-compressed) text file, with read errors as :class:`DataError`."""
    try:
        return read_text_file(path)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (OSError, EOFError) as e:  # includes gzip.BadGzipFile
        raise DataError(f"{path}: cannot read: {e}") from None


def load_alpaca_rows(path: Path, columns: Mapping[str, str] | None = None) -> list[Example]:
    """Alpaca-style rows (``instruction``/``question``, ``output``/``answer``) of a JSON/JSONL file."""
    return load_examples(Source(path, "alpaca", dict(columns or {})))
