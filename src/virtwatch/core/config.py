"""Configuration: TOML in the platform config dir, overridable by flags.

The file is parsed once into `Config`; each part of virtwatch reads its own section
through a small typed parser that raises `ConfigError` naming the exact key.

    [[hosts]]                 # several hosts; default: the one from --uri/env
    uri = "qemu+ssh://admin@hv2/system?no_tty=1"
    name = "hv2"
    read_only = false
    interval = 2.0

    [pool] / [collector] / [storage] / [health] / [ui]   sections owned by those parts
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from virtwatch.core.errors import AppError, ErrorCode, Severity

T = TypeVar("T", int, float, str, bool)


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
    data: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

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


def load_config(path: Path) -> Config:
    """Read `path`; a missing file is an empty config, a broken one a clear error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config({}, path)
    except OSError as err:
        raise config_error("(file)", f"cannot read: {err.strerror}", path) from err
    try:
        return Config(tomllib.loads(text), path)
    except tomllib.TOMLDecodeError as err:
        raise config_error("(file)", f"not valid TOML: {err}", path) from err


def get_typed(
    section: Mapping[str, Any],
    key: str,
    default: T,
    *,
    prefix: str,
    minimum: float | None = None,
    maximum: float | None = None,
    path: Path | None = None,
) -> T:
    """`section[key]` checked against the type of `default` and an optional range."""
    full = f"{prefix}.{key}" if prefix else key
    if key not in section:
        return default
    value = section[key]
    want = type(default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
        raise config_error(full, f"must be {want.__name__}, got {value!r}", path)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if minimum is not None and value < minimum:
            raise config_error(full, f"must be at least {minimum:g}, got {value!r}", path)
        if maximum is not None and value > maximum:
            raise config_error(full, f"must be at most {maximum:g}, got {value!r}", path)
    return value
