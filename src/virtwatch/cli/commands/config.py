"""`virtwatch config show`: the effective config (file, then VIRTWATCH_* variables, then
the defaults) as TOML on stdout, with every secret masked."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from virtwatch.cli.compose import config_from
from virtwatch.core.config import ENV_PREFIX
from virtwatch.core.libvirt.uri import redact_text, redact_uri


async def run_config(args: argparse.Namespace) -> int:
    import tomlkit  # this command only: not on every start

    config = config_from(args)
    data = _without_none(config.settings().model_dump())
    for host in data["hosts"]:
        host["uri"] = redact_uri(host["uri"])
    data["storage"]["db"] = redact_text(data["storage"]["db"])
    sys.stdout.write(
        f"# the effective config: {config.path} (file), {ENV_PREFIX}SECTION__KEY variables,"
        " defaults\n"
    )
    sys.stdout.write(redact_text(tomlkit.dumps(data)))
    return 0


def _without_none(value: Any) -> Any:
    """TOML has no null: a key left to its default-from-elsewhere is left out."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value
