"""``docs/options.md``: the option tables of every config, generated from the config fields (never edited by
hand; ``python -m sdft.docs_tables`` rewrites it and a test fails when it is stale)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from sdft.config import DistillConfig, EvalConfig, TrainConfig

from sdft.options import meta

HEADER = """# Options

Generated from the config dataclasses (`src/sdft/config.py`) by `python -m sdft.docs_tables`; do not edit by hand.
Every option is a YAML key of its section and a command-line flag (`max_new_tokens` is `--max-new-tokens`;
booleans read `--x/--no-x`). *Run-only* options never change a result: they are left out of run fingerprints and
experiment stage hashes, so changing them re-runs nothing.

"""


def options_markdown(cls: type) -> str:
    """The option table of one config class (``docs/options.md`` is made of these; a test keeps it fresh)."""
    lines = [f"### {cls.__name__}", "", (cls.__doc__ or "").strip().split("\n")[0], "",
             "| option | default | what it does |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        m = meta(f)
        default = "required" if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING \
            else repr(f.default_factory() if f.default is dataclasses.MISSING else f.default)
        name = f"`{f.name}`" + ("" if m["cli"] else " (YAML only)")
        text = m["help"] + (f" Choices: {', '.join(map(str, m['choices']))}." if m["choices"] else "")
        text += " *Run-only: does not change the result.*" if m["run_only"] else ""
        text += " *A run folder may be continued with another value.*" if m["extends"] else ""
        lines.append(f"| {name} | `{default}` | {text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    return HEADER + "\n".join(options_markdown(c) for c in (DistillConfig, TrainConfig, EvalConfig))


def main(argv: list[str] | None = None) -> None:
    out = Path((argv or sys.argv[1:] or ["docs/options.md"])[0])
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
