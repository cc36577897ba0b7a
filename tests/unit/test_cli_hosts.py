"""Which hosts the composition root builds: --uri, [[hosts]], [pool], [collector]."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtwatch.cli.compose import hosts_from
from virtwatch.cli.parser import build_parser
from virtwatch.core.config import ConfigError, load_config
from virtwatch.core.runtime import HostConfig


def parse(path: Path, text: str, *argv: str) -> list[HostConfig]:
    path.write_text(text)
    args = build_parser().parse_args(["dashboard", "--config", str(path), *argv])
    return hosts_from(load_config(path), args)


def test_config_hosts_with_their_own_settings(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    hosts = parse(
        tmp_path / "c.toml",
        f"""
[pool]
max_size = 4
[collector]
interval = 5
[[hosts]]
uri = "qemu+ssh://admin@hv1/system"
name = "hv1"
read_only = true
[[hosts]]
uri = "qemu+libssh2://ops@hv2/system"
interval = 1.5
username = "ops"
password_file = "{tmp_path / "pw"}"
""",
    )
    assert [h.label for h in hosts] == ["hv1", "qemu+libssh2://ops@hv2/system"]
    assert hosts[0].read_only
    assert not hosts[1].read_only
    assert (hosts[0].interval_s, hosts[1].interval_s) == (5.0, 1.5)
    assert hosts[0].pool.max_size == 4
    assert hosts[1].credentials is not None
    assert "s3cret" not in repr(hosts[1])


def test_uri_flag_wins_over_config_hosts(tmp_path: Path) -> None:
    hosts = parse(
        tmp_path / "c.toml",
        '[[hosts]]\nuri = "qemu+ssh://h/system"\n',
        "--uri",
        "test:///default",
        "--read-only",
        "--interval",
        "3",
    )
    assert [(h.uri, h.read_only, h.interval_s) for h in hosts] == [("test:///default", True, 3.0)]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[[hosts]]\nname = "x"\n', "hosts[0].uri"),
        ('[[hosts]]\nuri = "test:///default"\ninterval = "fast"\n', "hosts[0].interval"),
        ('[[hosts]]\nuri = "test:///default"\nread_only = "yes"\n', "hosts[0].read_only"),
        ("[pool]\nmax_size = 0\n", "pool.max_size"),
    ],
)
def test_a_bad_host_entry_names_its_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(tmp_path / "c.toml", text)
    assert key in info.value.message
