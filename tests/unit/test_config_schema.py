"""The one config schema: every section's keys, defaults, ranges, unknown keys, old
spellings, VIRTWATCH_* overrides, `virtwatch config show`, and the [ui] write-back."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from virtwatch.cli.main import main
from virtwatch.core.collect.collector import CollectorSettings, collector_settings
from virtwatch.core.config import Config, ConfigError, env_overrides, load_config
from virtwatch.core.config_schema import RENAMED, SECTIONS, Schema
from virtwatch.core.health.checks import CATALOGUE
from virtwatch.core.health.monitor import health_settings
from virtwatch.core.incidents import ReporterSettings, reporter_settings
from virtwatch.core.libvirt.pool_policy import PoolSettings
from virtwatch.core.ops.tasks import TaskSettings, task_settings
from virtwatch.core.triage.spikes import spike_rules
from virtwatch.storage.retention import Retention
from virtwatch.storage.settings import StorageSettings, parse_storage
from virtwatch.tui.settings import UiSettings, ui_settings, with_ui_section

EVERY_KEY = """
[[hosts]]
uri = "qemu+ssh://admin@hv2/system"
name = "hv2"
read_only = true
interval_s = 3.0
username = "admin"
password_file = "/etc/virtwatch/hv2.pw"

[pool]
min_size = 1
max_size = 5
acquire_timeout_s = 7.0
idle_timeout_s = 8.0
open_timeout_s = 9.0
call_timeout_s = 11.0
check_after_idle_s = 2.0
check_timeout_s = 3.0
health_interval_s = 12.0
keepalive_interval_s = 4
keepalive_count = 6
close_grace_s = 1.5
reconnect_initial_s = 0.5
reconnect_max_s = 8.0
down_retry_s = 30.0
stats_interval_s = 2.5

[collector]
interval_s = 1.0
slow_interval_s = 20.0
tick_timeout_s = 15.0
fast_groups = ["state", "cpu_total"]
slow_groups = ["block"]

[storage]
db = "/srv/vw.db"
raw_hours = 12
minute_days = 10
hour_days = 100
events_days = 20
errors_days = 21
audit_days = 22
tasks_days = 23
health_days = 2
alerts_days = 24
max_size_mb = 100
buffer_rows = 5000
flush_interval_s = 0.5

[errors]
window_s = 60.0
update_interval_s = 2.0
max_incidents = 50

[tasks]
max_concurrency = 2
history = 10
[tasks.policies.default]
max_retries = 1
initial_backoff_s = 0.5
multiplier = 3.0
max_backoff_s = 5.0
jitter = 0.0
attempt_timeout_s = 0
retry_on_timeout = false

[spikes]
enabled = false
margin = 1.0
hold_minutes = 3
baseline_hours = 12
min_baseline_minutes = 30
refresh_minutes = 5
[spikes.floors]
cpu_pct = 20.0

[health]
hold = 2
[health.checks."host.cpu"]
warn = 70.0
crit = 90.0
interval_s = 15.0
timeout_s = 5.0
hold = 4
enabled = false
[health.vms."db-1"."vm.steal"]
warn = 5.0
crit = 10.0

[ui]
theme = "nord"
refresh_s = 2.0
stale_after_s = 30.0
"""


def every_key(tmp_path: Path) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(EVERY_KEY)
    return load_config(path, env={})


def test_every_sections_keys_are_parsed(tmp_path: Path) -> None:
    config = every_key(tmp_path)
    assert config.warnings == ()
    s = config.settings()
    assert s.hosts[0].interval_s == 3.0
    assert s.hosts[0].read_only
    pool = PoolSettings.from_mapping(config.section("pool"), config.path)
    assert (pool.min_size, pool.max_size, pool.acquire_timeout_s) == (1, 5, 7.0)
    assert (pool.keepalive_interval_s, pool.stats_interval_s) == (4, 2.5)
    coll = collector_settings(config)
    assert (coll.interval_s, coll.slow_interval_s, coll.tick_timeout_s) == (1.0, 20.0, 15.0)
    storage = parse_storage(config.section("storage"), config.path)
    assert storage.db == "/srv/vw.db"
    assert storage.retention.raw_s == 12 * 3600
    assert storage.retention.health_s == 2 * 86400
    assert storage.retention.max_size_bytes == 100 * 1024 * 1024
    assert (storage.buffer_rows, storage.flush_interval_s) == (5000, 0.5)
    assert reporter_settings(config.section("errors")) == ReporterSettings(60.0, 2.0, 50)
    tasks = task_settings(config.section("tasks"))
    assert (tasks.max_concurrency, tasks.history) == (2, 10)
    default = tasks.policies["default"]
    assert (default.max_retries, default.multiplier, default.attempt_timeout_s) == (1, 3.0, None)
    assert default.retry_on_timeout is False
    spikes = spike_rules(config.section("spikes"))
    assert not spikes.enabled
    assert (spikes.hold_s, spikes.window_s, spikes.floors["cpu_pct"]) == (180, 12 * 3600, 20.0)
    health = health_settings(config, CATALOGUE)
    assert health.hold == 2
    assert health.infos["host.cpu"].interval_s == 15.0
    assert health.infos["host.cpu"].thresholds.warn == 70.0
    assert "host.cpu" in health.disabled
    assert health.per_vm[("db-1", "vm.steal")].crit == 10.0
    assert ui_settings(config) == UiSettings("nord", 2.0, 30.0)


def test_the_schema_has_the_defaults_the_settings_have() -> None:
    """Nothing in the file: every part gets the defaults it documents."""
    empty = Config({})
    assert PoolSettings.from_mapping(empty.section("pool")) == PoolSettings()
    assert collector_settings(empty) == CollectorSettings()
    assert parse_storage(empty.section("storage")) == StorageSettings()
    assert parse_storage({}).retention == Retention()
    assert reporter_settings({}) == ReporterSettings()
    assert task_settings({}) == TaskSettings()
    assert ui_settings(empty) == UiSettings()
    assert health_settings(empty, CATALOGUE).hold == 3
    rules = spike_rules({})
    assert (rules.margin, rules.hold_s, rules.window_s) == (0.5, 120, 24 * 3600)
    assert set(SECTIONS) | {"hosts"} == set(Schema.model_fields)


def test_every_key_has_a_doc_and_every_seconds_key_ends_in_s() -> None:
    for name, model in SECTIONS.items():
        for key, info in model.model_fields.items():
            assert info.description, f"{name}.{key} has no doc"
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get("unit") == "s":
                assert key.endswith("_s"), f"{name}.{key} holds seconds"


@pytest.mark.parametrize(
    ("section", "table", "message"),
    [
        ("pool", {"max_size": 0}, "'pool.max_size' in /c.toml: must be at least 1, got 0"),
        ("pool", {"max_size": 1001}, "'pool.max_size' in /c.toml: must be at most 1000"),
        ("pool", {"min_size": -1}, "'pool.min_size' in /c.toml: must be at least 0"),
        ("pool", {"acquire_timeout_s": 0}, "'pool.acquire_timeout_s' in /c.toml: must be at least"),
        ("collector", {"interval_s": 3601}, "'collector.interval_s' in /c.toml: must be at most"),
        (
            "storage",
            {"buffer_rows": 999},
            "'storage.buffer_rows' in /c.toml: must be at least 1000",
        ),
        ("storage", {"flush_interval_s": 61}, "'storage.flush_interval_s' in /c.toml: must be at"),
        ("storage", {"raw_hours": 0.5}, "'storage.raw_hours' in /c.toml: must be at least 1"),
        ("errors", {"update_interval_s": 0.01}, "'errors.update_interval_s' in /c.toml: must"),
        ("tasks", {"history": -1}, "'tasks.history' in /c.toml: must be at least 0"),
        ("spikes", {"margin": 101}, "'spikes.margin' in /c.toml: must be at most 100"),
        ("ui", {"refresh_s": 11}, "'ui.refresh_s' in /c.toml: must be at most 10"),
        ("ui", {"stale_after_s": 0.5}, "'ui.stale_after_s' in /c.toml: must be at least 1"),
        ("ui", {"theme": 3}, "'ui.theme' in /c.toml: must be str, got 3"),
        ("pool", {"max_size": 2.5}, "'pool.max_size' in /c.toml: must be int"),
        ("spikes", {"enabled": "yes"}, "'spikes.enabled' in /c.toml: must be true or false"),
    ],
)
def test_ranges_and_types_are_checked(section: str, table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config({section: table}, Path("/c.toml")).settings()
    assert f"config key {message}" in caught.value.message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[pool]\nmax_szie = 3\n", "pool.max_szie"),
        ("[colour]\nx = 1\n", "colour"),
        ("[storage]\npath = 'x'\n", "storage.path"),
        ('[[hosts]]\nuri = "test:///default"\nport = 1\n', "hosts[0].port"),
        ("[tasks.policies.x]\nretries = 1\n", "tasks.policies.x.retries"),
        ('[health.checks."host.cpu"]\nwarning = 1\n', 'health.checks."host.cpu".warning'),
    ],
)
def test_an_unknown_key_is_refused_naming_it_and_the_file(
    tmp_path: Path, text: str, key: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.message.startswith(f"config key '{key}' in {path}: unknown key")


def test_an_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"known: .*max_size.*min_size"):
        Config({"pool": {"maxsize": 3}}).settings()


@pytest.mark.parametrize(("where", "old"), sorted(RENAMED.items()))
def test_every_old_spelling_is_accepted_with_a_warning(
    tmp_path: Path, where: tuple[str, str], old: str
) -> None:
    table, old_key = where
    new_key = old
    value: Any = 3.0
    if table == "hosts.*":
        text = f'[[hosts]]\nuri = "test:///default"\n{old_key} = {value}\n'
    elif table == "health.checks.*":
        text = f'[health.checks."host.cpu"]\n{old_key} = {value}\n'
    else:
        value = 4 if new_key == "keepalive_interval_s" else 3.0
        text = f"[{table}]\n{old_key} = {value}\n"
    path = tmp_path / "config.toml"
    path.write_text(text)
    config = load_config(path, env={})
    assert len(config.warnings) == 1
    note = config.warnings[0]
    assert f"{old_key}' is now '" in note
    assert f"{new_key}'" in note
    assert str(path) in note
    dumped = config.settings().model_dump()
    if table == "hosts.*":
        assert dumped["hosts"][0][new_key] == value
    elif table == "health.checks.*":
        assert dumped["health"]["checks"]["host.cpu"][new_key] == value
    else:
        assert dumped[table][new_key] == value


def test_the_new_spelling_wins_over_the_old_one() -> None:
    config = Config({"pool": {"acquire_timeout": 5, "acquire_timeout_s": 7}})
    assert config.settings().pool.acquire_timeout_s == 7


def test_an_old_spelling_is_warned_once_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[ui]\nrefresh = 2.0\n")
    assert main(["config", "show", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("warning:") == 1
    assert "'ui.refresh' is now 'ui.refresh_s'" in captured.err
    assert tomllib.loads(captured.out)["ui"]["refresh_s"] == 2.0


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[pool]\nmax_size = 8\n[storage]\ndb = "/file.db"\n')
    env = {
        "VIRTWATCH_POOL__MAX_SIZE": "4",
        "VIRTWATCH_STORAGE__DB": "/env.db",
        "virtwatch_ui__theme": "nord",
        "VIRTWATCH_COLLECTOR__FAST_GROUPS": '["state"]',
        "VIRTWATCH_HEALTH__CHECKS__HOST.CPU__WARN": "70",
        "VIRTWATCH_DEBUG": "1",  # not config: no `__`
    }
    s = load_config(path, env=env).settings()
    assert (s.pool.max_size, s.storage.db, s.ui.theme) == (4, "/env.db", "nord")
    assert s.collector.fast_groups == ["state"]
    assert s.health.checks["host.cpu"].warn == 70.0
    assert env_overrides({"VIRTWATCH_POOL__ACQUIRE_TIMEOUT_S": "2.5"}) == {
        "pool": {"acquire_timeout_s": 2.5}
    }


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"VIRTWATCH_POOL__MAX_SIZE": "0"})
    assert caught.value.message == (
        "config key 'pool.max_size' (from VIRTWATCH_POOL__MAX_SIZE): must be at least 1, got 0"
    )
    with pytest.raises(ConfigError, match=r"'pool\.colour'.*unknown key"):
        load_config(path, env={"VIRTWATCH_POOL__COLOUR": "red"})


def test_config_show_masks_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[[hosts]]\n"
        'uri = "qemu+tcp://admin:s3cret@hv2/system?keyfile=/root/.ssh/key"\n'
        '[storage]\ndb = "postgresql://vw:dbpass@pg/virtwatch"\n'
    )
    monkeypatch.setenv("VIRTWATCH_POOL__MAX_SIZE", "4")
    assert main(["config", "show", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert "dbpass" not in out
    assert "/root/.ssh/key" not in out
    doc = tomllib.loads(out)
    assert doc["hosts"][0]["uri"].startswith("qemu+tcp://admin:")
    assert doc["pool"]["max_size"] == 4  # the environment's
    assert doc["pool"]["min_size"] == 2  # the default
    assert doc["storage"]["db"].startswith("postgresql://vw:")
    assert set(doc) == set(Schema.model_fields)


def test_a_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[pool]\nmax_size = 0\n")
    assert main(["config", "show", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"config key 'pool.max_size' in {path}: must be at least 1, got 0" in err


COMMENTED = """\
# virtwatch config, hand-written
[[hosts]]
uri = "qemu+ssh://admin@hv1/system"   # the big one

[ui]
# my favourite
theme = "nord"        # dark and calm
refresh_s = 1.0       # fast enough
stale_after_s = 10.0

[pool]
max_size = 4  # keep libvirtd calm
"""


def test_the_ui_write_back_keeps_comments_and_changes_one_value() -> None:
    out = with_ui_section(COMMENTED, UiSettings("gruvbox", 1.0, 10.0))
    before, after = COMMENTED.splitlines(), out.splitlines()
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [
        ('theme = "nord"        # dark and calm', 'theme = "gruvbox"        # dark and calm')
    ]
    assert with_ui_section(COMMENTED, UiSettings("nord", 1.0, 10.0)) == COMMENTED


def test_the_ui_write_back_renames_an_old_key_in_place() -> None:
    text = "[ui]\nrefresh = 1.0  # old\n"
    out = with_ui_section(text, UiSettings("textual-dark", 2.0, 10.0))
    assert "refresh_s = 2.0  # old" in out
    assert "refresh =" not in out
    assert ui_settings(Config(tomllib.loads(out))) == UiSettings("textual-dark", 2.0, 10.0)
