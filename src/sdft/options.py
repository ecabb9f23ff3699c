"""The option machinery every config shares (a leaf: imports nothing from sdft at import time).

An option is one dataclass field made by :func:`opt`, carrying its help text, choices, minimum and whether it is
*run-only* (cannot change a result) or *extends* a run (a folder may be continued with another value). Building a
config from YAML and command-line values (:func:`build`, :func:`load`) coerces types and checks choices and
minimums, naming the file, section and key in every error.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import field, fields
from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the file, section and key."""


def opt(default: Any = dataclasses.MISSING, help: str = "", *, run_only: bool = False, extends: bool = False,
        choices: tuple | None = None, min: float | None = None, factory: Any = None, cli: bool = True,
        flag: str | None = None, late: bool = False) -> Any:
    """A config field with its one description. ``run_only``: cannot change a result (left out of every hash and
    folder-reuse check). ``extends``: changes what a run computes but a run folder may be continued with another
    value (it holds results per value, e.g. ``limit`` or ``tasks``): left out of the folder-reuse check, kept in
    experiment stage hashes. ``cli=False``: YAML only. ``flag``: the CLI name when it differs (e.g. ``check``).
    ``late``: an option added after runs existed; at its default it is left out of the folder fingerprint, so a
    folder made before it still resumes (a non-default value is compared as any other)."""
    md = {"help": help, "run_only": run_only, "extends": extends, "choices": choices, "min": min, "cli": cli,
          "flag": flag, "late": late}
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


def meta(f: dataclasses.Field) -> dict[str, Any]:
    return {"help": "", "run_only": False, "extends": False, "choices": None, "min": None, "cli": True, "flag": None,
            "late": False, **f.metadata}


def run_only(cls: type) -> frozenset[str]:
    """The options of ``cls`` that cannot change a result (the one definition: each field's ``run_only``)."""
    return frozenset(f.name for f in fields(cls) if meta(f)["run_only"])


def folder_free(cls: type) -> frozenset[str]:
    """Options a run folder may be continued with another value of: the run-only ones and the ``extends`` ones."""
    return run_only(cls) | {f.name for f in fields(cls) if meta(f)["extends"]}


def fingerprint(cfg: Any) -> dict[str, Any]:
    """``cfg`` as a dict without the options a run folder may change (:func:`folder_free`): what the folder-reuse
    check compares."""
    skip = folder_free(type(cfg))
    late = {f.name: f.default for f in fields(type(cfg)) if meta(f)["late"]}
    return {k: v for k, v in to_dict(cfg).items() if k not in skip and not (k in late and v == late[k])}


def hashable(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The given ``values`` without the run-only options of ``cls``: what an experiment stage hash covers (only
    the keys given, so adding an option with a default later keeps old hashes)."""
    skip = run_only(cls)
    return {k: v for k, v in values.items() if k not in skip}


def _coerce(name: str, tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(name, inner[0], value, where)
        if int in inner and isinstance(value, str) and value.strip().isdigit():  # `int | str`: 16 or a word
            return int(value)
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: '{name}' must be a list")
        return tuple(value)
    if tp is bool and not isinstance(value, bool):
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise ConfigError(f"{where}: '{name}' must be true or false, got {value!r}")
    if tp in (int, float) and not isinstance(value, bool):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: '{name}' must be a{'n integer' if tp is int else ' number'}, "
                              f"got {value!r}") from None
    if tp is str and not isinstance(value, str):
        if isinstance(value, (int, float)):
            return str(value)
        raise ConfigError(f"{where}: '{name}' must be a string, got {value!r}")
    if tp is dict and not isinstance(value, dict):
        raise ConfigError(f"{where}: '{name}' must be a mapping, got {value!r}")
    return value


def _check_value(f: dataclasses.Field, value: Any, where: str) -> None:
    m = meta(f)
    if value is None:
        return
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if m["choices"] and value not in m["choices"] and not (numeric and all(isinstance(c, str) for c in m["choices"])):
        # (a number for an `int | str` option whose choices are its words, e.g. batch_size 16 | auto)
        raise ConfigError(f"{where}: '{f.name}' is {value!r}; use one of {', '.join(map(str, m['choices']))}")
    if m["min"] is not None and numeric and value < m["min"]:
        raise ConfigError(f"{where}: '{f.name}' must be at least {m['min']:g}, got {value!r}")


def build(cls: type[T], values: Mapping[str, Any], where: str = "config") -> T:
    """Instantiate ``cls`` from a mapping, refusing unknown keys, coercing simple types and checking each
    field's choices and minimum. ``where`` names the file and section in every error."""
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(by_name))}")
    kwargs = {k: _coerce(k, hints[k], v, where) for k, v in values.items()}
    for k, v in kwargs.items():
        _check_value(by_name[k], v, where)
    missing = [f.name for f in fields(cls) if f.name not in kwargs  # type: ignore[arg-type]
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    return cls(**kwargs)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file (UTF-8 with or without a byte-order mark, UTF-16 with one); errors name the file."""
    import yaml

    from sdft.data import DataError, decode_text

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        loaded = yaml.safe_load(decode_text(p.read_bytes(), p)) or {}
    except DataError as e:
        raise ConfigError(str(e)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping of keys")
    return loaded


def load(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
         section: str | None = None) -> T:
    """YAML file (optionally one ``section`` of it) overlaid with non-None CLI ``overrides``."""
    values: dict[str, Any] = {}
    where = "command line"
    if path:
        loaded = read_yaml(path)
        if section is not None and isinstance(loaded.get(section), dict):
            loaded = loaded[section]
        values.update(loaded)
        where = str(path) + (f" [{section}]" if section else "")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return build(cls, values, where)


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
