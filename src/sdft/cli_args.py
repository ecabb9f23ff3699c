"""CLI options derived from the config dataclasses (each option is described once, on its field).

``config_command(DistillConfig, "distill")`` turns a function ``fn(cfg, **extra)`` into a typer command whose
options are the dataclass fields (help, choices and flags from the field metadata), plus ``--config`` and the
extra parameters the function declares itself. Booleans read ``--x/--no-x``; tuple fields take a comma list,
or a repeatable option where the field names a ``flag``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from sdft.options import load, meta


def _base(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0] if len(inner) == 1 else str
    return tp


def help_text(f: dataclasses.Field) -> str:
    m = meta(f)
    text = m["help"]
    if m["choices"] and "|" not in text:
        text += f" ({' | '.join(map(str, m['choices']))})"
    if m["run_only"]:
        text += " (run-only: never changes a result)"
    return text


def field_params(cls: type, skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        m = meta(f)
        if not m["cli"] or f.name in skip:
            continue
        name = m["flag"] or f.name
        dash = name.replace("_", "-")
        tp = _base(hints[f.name])
        if tp is bool:
            ann, decls = Optional[bool], [f"--{dash}/--no-{dash}"]
        elif typing.get_origin(tp) is tuple:
            ann, decls = (Optional[List[str]], [f"--{dash}"]) if m["flag"] else (Optional[str], [f"--{dash}"])
        elif tp in (int, float, str):
            ann, decls = Optional[tp], [f"--{dash}"]
        else:
            continue
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann,
                                        default=typer.Option(None, *decls, help=help_text(f))))
    return params


def config_command(app: typer.Typer, cls: type, section: str, name: str | None = None,
                   skip: tuple[str, ...] = ()) -> Callable:
    """Register ``fn(cfg, **extra)`` as the command ``name``: the config's fields become options."""

    def deco(fn: Callable) -> Callable:
        extra = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in
                 list(inspect.signature(fn).parameters.values())[1:]]
        fparams = field_params(cls, skip)
        flag_to_field = {meta(f)["flag"]: f.name for f in dataclasses.fields(cls) if meta(f)["flag"]}
        config = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                   default=typer.Option(None, help=f"YAML config (a `{section}:` section or "
                                                                   "top-level keys); options override it"))

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            path = kwargs.pop("config")
            extras = {p.name: kwargs.pop(p.name) for p in extra}
            overrides = {flag_to_field.get(k, k): (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()}
            return fn(lambda: load(cls, path, overrides, section=section if path else None), **extras)

        command.__signature__ = inspect.Signature([config, *fparams, *extra])  # type: ignore[attr-defined]
        del command.__wrapped__  # typer must read the new signature, not fn's
        app.command(name or fn.__name__)(command)
        return command

    return deco
