"""Configuration: TOML in the platform config dir, then `VIRTWATCH_*` variables, then flags.

The keys, types, defaults and ranges are in `config_schema` (one place). This module reads
the file, renames old spellings (with a warning), lays the environment over it, and turns
a validation failure into one `ConfigError` naming the key and the file:

    config key 'pool.max_size' in /home/a/.config/virtwatch/config.toml: must be at least 1, got 0

Environment: `VIRTWATCH_<SECTION>__<KEY>=value` (double underscore between the parts,
any case), e.g. `VIRTWATCH_POOL__MAX_SIZE=4`, `VIRTWATCH_STORAGE__DB=/srv/vw.db`,
`VIRTWATCH_HEALTH__CHECKS__HOST.CPU__WARN=80`. The value is read as a TOML value
(`4`, `true`, `[\"state\"]`), else taken as a string.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from virtwatch.core.config_schema import RENAMED, Schema
from virtwatch.core.errors import AppError, ErrorCode, Severity

M = TypeVar("M", bound=BaseModel)
ENV_PREFIX = "VIRTWATCH_"


class ConfigError(AppError):
    """A bad value in the config file; the message names the key."""


def config_error(key: str, problem: str, path: Path | None = None) -> ConfigError:
    where = f" in {path}" if path else ""
    return ConfigError(
        ErrorCode.VALIDATION_ERROR,
        f"config key '{key}'{where}: {problem}",
        "fix the value in the config file (or remove it to get the default)",
        Severity.ERROR,
        {"key": key},
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The raw document (file with the environment laid over it) and where it came from.
    `settings()` is the validated schema; `section()` a table as written (old key names
    too: each part validates its section with `validate`, which knows them)."""

    data: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None
    warnings: tuple[str, ...] = ()

    def settings(self) -> Schema:
        return validate(Schema, self.data, prefix="", path=self.path)

    def section(self, name: str) -> Mapping[str, Any]:
        value = self.data.get(name, {})
        if not isinstance(value, Mapping):
            raise config_error(name, "must be a table ([" + name + "])", self.path)
        return value

    def hosts(self) -> list[Mapping[str, Any]]:
        value = self.data.get("hosts", [])
        if not isinstance(value, list) or not all(isinstance(h, Mapping) for h in value):
            raise config_error("hosts", "must be an array of tables ([[hosts]])", self.path)
        return list(value)


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read `path` (a missing file is an empty config), lay `env` (default: os.environ)
    over it, and validate the whole of it; a broken file is one clear ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except OSError as err:
        raise config_error("(file)", f"cannot read: {err.strerror}", path) from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise config_error("(file)", f"not valid TOML: {err}", path) from err
    data, notes = renamed(data, "")
    given = env_overrides(os.environ if env is None else env)
    env_data, env_notes = renamed(given, "")
    data = merged(data, env_data)
    notes = [f"{note} (in {path})" for note in notes] + [
        f"{n} (in the environment)" for n in env_notes
    ]
    config = Config(data, path, tuple(notes))
    try:
        config.settings()  # every key checked now, not when a part first reads its section
    except ConfigError as err:
        key = err.context.get("key", "")
        from_env = {
            key_name(loc): f"{ENV_PREFIX}{'__'.join(map(str, loc)).upper()}"
            for loc in _leaves(given)
        }
        if key in from_env:  # the value came from the environment, not from the file
            raise ConfigError(
                err.code,
                err.message.replace(f" in {path}:", f" (from {from_env[key]}):", 1),
                "fix or unset the variable",
                err.severity,
                err.context,
            ) from None
        raise
    return config


def _leaves(data: Mapping[str, Any], loc: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            out += _leaves(value, (*loc, key))
        else:
            out.append((*loc, key))
    return out


def validate(model: type[M], data: Mapping[str, Any], *, prefix: str, path: Path | None) -> M:
    """`data` (old spellings allowed) as `model`, or a ConfigError naming the first bad key."""
    try:
        return model.model_validate(renamed(data, prefix)[0])
    except ValidationError as err:
        first = err.errors()[0]
        loc = ((prefix,) if prefix else ()) + _as_written(data, tuple(first["loc"]))
        raise config_error(
            key_name(loc), _problem(model, first, tuple(first["loc"])), path
        ) from None


def _as_written(data: Mapping[str, Any], loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """`loc` with its last key in the spelling the user wrote (an old one, if so)."""
    node: Any = data
    for part in loc[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return loc
    if not isinstance(node, Mapping) or loc[-1] in node:
        return loc
    olds = [old for (_, old), new in RENAMED.items() if new == loc[-1] and old in node]
    return (*loc[:-1], olds[0]) if olds else loc


def key_name(loc: tuple[Any, ...]) -> str:
    """('health', 'checks', 'host.cpu', 'warn') -> health.checks."host.cpu".warn"""
    names = {2} if loc[:2] == ("health", "checks") else set()
    names |= {2, 3} if loc[:2] == ("health", "vms") else set()
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = f'"{part}"' if "." in str(part) or i in names else str(part)
        out += f".{text}" if out else text
    return out


def _problem(model: type[BaseModel], error: Any, loc: tuple[Any, ...]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    if kind == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        return f"unknown key (known: {', '.join(known)})" if known else "unknown key"
    if kind == "missing":
        return "is required"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "less_than_equal": ("at most", "le"),
        "greater_than": ("above", "gt"),
        "less_than": ("below", "lt"),
    }
    if kind in bounds:
        word, name = bounds[kind]
        unit = _unit(model, loc)
        return f"must be {word} {ctx[name]:g}{' ' + unit if unit == 's' else ''}, got {got!r}"
    types_ = {
        "int_type": "int (a whole number)",
        "float_type": "float (a number)",
        "bool_type": "true or false",
        "string_type": "str",
        "list_type": "a list",
        "dict_type": "a table",
        "model_type": "a table",
        "finite_number": "a finite number",
    }
    if kind in types_:
        return f"must be {types_[kind]}, got {got!r}"
    if kind == "string_too_short":
        return "must not be empty"
    return f"{error['msg']}, got {got!r}"


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    node = _inner(_annotation(model, loc))
    if isinstance(node, type) and issubclass(node, BaseModel):
        return sorted(node.model_fields)
    return []


def _unit(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    parent = _inner(_annotation(model, loc[:-1]))
    if not isinstance(parent, type) or not issubclass(parent, BaseModel):
        return ""
    info = parent.model_fields.get(str(loc[-1]))
    extra = info.json_schema_extra if info is not None else None
    return str(extra.get("unit", "")) if isinstance(extra, dict) else ""


def _annotation(model: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    """The type at `loc` inside `model` (None when there is none)."""
    node: Any = model
    for part in loc:
        node = _inner(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            if not isinstance(part, str) or part not in node.model_fields:
                return None
            node = node.model_fields[part].annotation
        else:  # a dict's value or a list's item: the part is a name or an index
            args = typing.get_args(node)
            node = args[-1] if args else None
    return node


def _inner(node: Any) -> Any:
    """`X | None` -> X."""
    if isinstance(node, types.UnionType) or typing.get_origin(node) is typing.Union:
        args = [a for a in typing.get_args(node) if a is not type(None)]
        return args[0] if len(args) == 1 else node
    return node


def renamed(data: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """`data` (the table at `where`) with old key spellings moved to their new names, and a
    note for each. When both are given the new one wins."""
    notes: list[str] = []
    out: dict[str, Any] = {}
    for key, value in data.items():
        new = RENAMED.get((where, key)) or RENAMED.get((_star(where), key))
        child = f"{where}.{key}" if where else key
        if isinstance(value, Mapping):
            value, inner = renamed(value, child)
            notes += inner
        elif isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
            items = [renamed(v, f"{child}.*") for v in value]
            value = [v for v, _ in items]
            notes += [n for _, inner in items for n in inner]
        if new is not None:
            notes.append(
                f"config key '{_shown(where, key)}' is now '{_shown(where, new)}'; "
                "the old name is accepted until the next release"
            )
            if new in data:
                continue
            key = new
        out[key] = value
    return out, notes


def _star(where: str) -> str:
    """'health.checks.host.cpu' -> 'health.checks.*'; 'hosts.*' stays."""
    for prefix in ("health.checks.", "hosts."):
        if where.startswith(prefix):
            return prefix + "*"
    return where


def _shown(where: str, key: str) -> str:
    if not where:
        return key
    if where.startswith("health.checks.") and where != "health.checks.*":
        return f'health.checks."{where.removeprefix("health.checks.")}".{key}'
    return f"{where.replace('.*', '[]')}.{key}"


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """`VIRTWATCH_POOL__MAX_SIZE=4` -> {"pool": {"max_size": 4}}; variables without `__`
    (VIRTWATCH_DEBUG) are not config."""
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.upper().startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = _env_value(raw)
    return out


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `over` laid on it, table by table."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = merged(old, value)
        else:
            out[key] = value
    return out
