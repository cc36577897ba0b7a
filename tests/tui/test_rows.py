"""Pure parts of the dashboard: row text, sort order, filter queries, formatting,
action and outcome wording, settings round trips, graph coordinates."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.canned import (
    HOST,
    NOW,
    audit_records,
    domain,
    fleet_snapshot,
    second_host_snapshot,
    task_updates,
)
from virtwatch.core.config import Config, ConfigError, load_config
from virtwatch.core.ops.actions import Action
from virtwatch.core.records import AuditRecord, Outcome, TaskState
from virtwatch.tui.action_flow import ACTION_BINDINGS, activity_text, outcome_text
from virtwatch.tui.detail import Span, VmDetailScreen, markers_for, to_xy
from virtwatch.tui.dialogs import confirm_text, needs_typed_count, targets_text
from virtwatch.tui.factory import history_for, read_only_hosts
from virtwatch.tui.format import fmt_figures, fmt_rate, gauge, sparkline
from virtwatch.tui.header import LEAVE_OUT, fitted_host_line, host_line
from virtwatch.tui.machines import MachineTable
from virtwatch.tui.ports import VmRef
from virtwatch.tui.rows import (
    COLUMN_INDEX,
    CUT_FIRST,
    SORTABLE,
    Column,
    fit_widths,
    matches,
    parse_query,
    reason_text,
    row_cells,
    sort_value,
    visible_columns,
)
from virtwatch.tui.settings import UiSettings, save_ui_settings, ui_settings, with_ui_section


def test_row_cells_say_state_reason_activity_and_age() -> None:
    d = domain("web", state=3, reason=5)
    cells = row_cells(HOST, d, NOW, activity="⟳ resume…", stale_s=75)
    assert cells[COLUMN_INDEX["state"]] == "paused: I/O error ⟳ resume… · 1m15s old"
    assert cells[COLUMN_INDEX["mark"]] == " "
    assert row_cells(HOST, d, NOW, marked=True)[COLUMN_INDEX["mark"]] == "●"
    assert reason_text(domain("a")) == "running"
    assert reason_text(domain("a", reason=2)) == "running: migrated in"


def test_cpu_cell_carries_a_sparkline_only_for_active_vms() -> None:
    cells = row_cells(HOST, domain("a", cpu=50.0), NOW, spark=[0, 50, 100])
    assert cells[COLUMN_INDEX["cpu"]] == " 50.0      ▁▅█"
    off = row_cells(HOST, domain("b", state=5, reason=1), NOW, spark=[1, 2])
    assert off[COLUMN_INDEX["cpu"]] == "—"


def test_columns_show_host_only_for_several_hosts() -> None:
    assert "host" not in [c.key for c in visible_columns(multi_host=False)]
    assert [c.key for c in visible_columns(multi_host=True)][:3] == ["mark", "host", "name"]


@pytest.mark.parametrize("column", SORTABLE)
def test_every_column_sorts_the_fleet_totally(column: str) -> None:
    snap = fleet_snapshot()
    keys = [sort_value(column, HOST, d) for d in snap.domains]
    assert len(set(keys)) == len(keys)  # ties broken by name and uuid
    ordered = sorted(snap.domains, key=lambda d: sort_value(column, HOST, d))
    assert len(ordered) == 12


def test_sorting_by_cpu_puts_unknown_first_then_by_value() -> None:
    snap = fleet_snapshot()
    ordered = [d.name for d in sorted(snap.domains, key=lambda d: sort_value("cpu", HOST, d))]
    assert ordered[-1] == "build-runner"
    assert ordered[0] in {"backup", "laptop-image", "legacy-crm", "win2022-rdp"}


def test_queries_match_fields() -> None:
    d = domain("web-01", state=3, reason=5)
    assert matches(parse_query(""), HOST, d)
    assert matches(parse_query("WEB"), HOST, d)
    assert matches(parse_query("i/o"), HOST, d)
    assert matches(parse_query("state:paused"), HOST, d)
    assert not matches(parse_query("state:running"), HOST, d)
    assert matches(parse_query("host:qemu"), HOST, d)
    assert not matches(parse_query("name:qemu"), HOST, d)
    assert matches(parse_query("tag:prod"), HOST, d, ("prod", "web"))
    assert not matches(parse_query("tag:prod"), HOST, d)
    assert matches(parse_query("web tag:prod"), HOST, d, ("prod",))
    assert not matches(parse_query("web db"), HOST, d)
    assert parse_query("tag: x").words == (("", "x"),)  # an empty value is dropped
    assert parse_query("foo:bar").words == (("", "foo:bar"),)  # unknown keys are words


@given(st.text(max_size=40))
def test_any_text_parses_and_a_name_always_matches_itself(text: str) -> None:
    q = parse_query(text)
    assert isinstance(q.words, tuple)
    name = text.strip().split()[0] if text.split() else "x"
    d = domain("x")._replace(name=name)
    if ":" not in name:
        assert matches(parse_query(name), HOST, d)


def test_rates_pairs_sparklines_and_gauges() -> None:
    assert fmt_rate(None) == "—"
    assert fmt_rate(0) == "0 B/s"
    assert fmt_rate(1500) == "1.5 KB/s"
    assert fmt_rate(123_456_789) == "123 MB/s"
    assert fmt_rate(-5) == "0 B/s"
    assert fmt_figures("—", "—") == "—"
    assert fmt_figures("1.2M", "—") == "1.2M    —"
    assert sparkline([], 4) == "    "
    assert sparkline([0, 100], 4, top=100) == "  ▁█"
    assert sparkline([5, 5], 2) == "██"  # scaled to the largest value shown
    assert sparkline([1, 2, 3], 0) == ""
    assert sparkline([float("nan"), 1.0], 2, top=1.0) == "▁█"
    assert gauge(None, 3) == "···"
    assert gauge(0, 3) == "   "
    assert gauge(100, 3) == "███"
    assert gauge(50, 4) == "██  "
    assert gauge(250, 2) == "██"
    assert gauge(50, 0) == ""


@given(st.lists(st.floats(0, 1000, allow_nan=False), max_size=30), st.integers(0, 20))
def test_a_sparkline_is_always_its_width(values: list[float], width: int) -> None:
    assert len(sparkline(values, width)) == width


@given(st.one_of(st.none(), st.floats(-50, 500, allow_nan=False)), st.integers(0, 30))
def test_a_gauge_is_always_its_width(pct: float | None, width: int) -> None:
    assert len(gauge(pct, width)) == width


def _labels(columns: tuple[Column, ...]) -> list[tuple[int, int]]:
    return [(len(c.label), len(c.short or c.label)) for c in columns]


def test_columns_fit_their_widest_text_and_short_of_room_labels_then_state_give_way() -> None:
    cols = visible_columns(multi_host=False)
    keys = [c.key for c in cols]
    content = [len(t) for t in row_cells(HOST, domain("web-01", state=5, reason=2), NOW)]
    content = [content[COLUMN_INDEX[k]] for k in keys]
    labels = _labels(cols)
    full = [max(c, lab) for c, (lab, _) in zip(content, labels, strict=True)]
    # room enough (or not laid out yet): each column is its widest text or its label
    assert fit_widths(cols, content, labels, None).widths == tuple(full)
    roomy = fit_widths(cols, content, labels, sum(full))
    assert (roomy.widths, roomy.short_labels) == (tuple(full), False)
    # one cell short: the short labels, and nothing is cut
    short = fit_widths(cols, content, labels, sum(full) - 1)
    assert short.short_labels
    assert short.widths[keys.index("state")] == len("shut off: destroyed by admin")
    assert short.widths[keys.index("disk")] == len("Disk r/w B/s")
    # shorter still: State is cut, only as far as needed, then down to its floor
    state = keys.index("state")
    room = sum(short.widths) - 3
    cut = fit_widths(cols, content, labels, room)
    assert cut.widths[state] == len("shut off: destroyed by admin") - 3
    assert sum(cut.widths) == room
    floor = cols[state].floor
    tight = fit_widths(cols, content, labels, 10)
    assert tight.widths[state] == floor
    assert tight.widths[keys.index("name")] == len("web-01")  # narrower than its floor
    assert [w for i, w in enumerate(tight.widths) if keys[i] not in CUT_FIRST] == [
        w for i, w in enumerate(short.widths) if keys[i] not in CUT_FIRST
    ]


@given(
    st.lists(st.integers(0, 60), min_size=11, max_size=11),
    st.one_of(st.none(), st.integers(0, 300)),
    st.booleans(),
)
def test_fitted_widths_never_cut_below_a_floor_and_fit_when_the_floors_do(
    raw: list[int], room: int | None, multi_host: bool
) -> None:
    cols = visible_columns(multi_host=multi_host)
    content = raw[: len(cols)]
    labels = _labels(cols)
    fit = fit_widths(cols, content, labels, room)
    least = []
    for c, text, (lab, short), w in zip(cols, content, labels, fit.widths, strict=True):
        shown = short if fit.short_labels else lab
        assert w >= shown  # a label is never cut
        if c.key in CUT_FIRST and fit.short_labels:
            assert w >= min(max(text, short), max(c.floor, short))
        else:
            assert w == max(text, shown)  # only State, Host and Name are ever cut
        least.append(min(max(text, short), max(c.floor, short)) if c.key in CUT_FIRST else w)
    wanted = [max(t, short) for t, (_, short) in zip(content, labels, strict=True)]
    if (
        room is None
        or sum(max(t, lab) for t, (lab, _) in zip(content, labels, strict=True)) <= room
    ):
        assert not fit.short_labels
    elif sum(least) > room:
        assert list(fit.widths) == least  # everything at its floor: the rest scrolls
    elif sum(wanted) > room:
        assert sum(fit.widths) == room  # cut only as far as needed
    else:
        assert list(fit.widths) == wanted  # the short labels were enough
    if room is not None:
        wider = fit_widths(cols, content, labels, room + 7)
        assert all(a <= b for a, b in zip(fit.widths, wider.widths, strict=True))


def test_a_host_line_leaves_out_the_least_important_parts_first() -> None:
    snap = fleet_snapshot()
    full = host_line(HOST, snap, None, NOW).plain
    assert fitted_host_line(HOST, snap, None, NOW, None).plain == full
    assert fitted_host_line(HOST, snap, None, NOW, len(full)).plain == full
    assert "libvirt 9.0.0 · QEMU 7.2.22" in full
    at_118 = fitted_host_line(HOST, snap, None, NOW, 118).plain
    assert "libvirt" not in at_118
    assert "hv-07.example.net" in at_118
    assert "VMs 8/12 running" in at_118
    at_78 = fitted_host_line(HOST, snap, None, NOW, 78).plain
    assert at_78 == "qemu:///system · ● connected · VMs 8/12 running · CPU 32% · MEM 41 GiB/64 GiB"
    # old data keeps its age however narrow the line
    old = dataclasses.replace(snap, taken_at=NOW - 75)
    assert "data 1m15s ago" in fitted_host_line(HOST, old, None, NOW, 78).plain
    everything_out = host_line(HOST, snap, None, NOW, leave_out=LEAVE_OUT).plain
    assert everything_out == "qemu:///system · ● · VMs 8/12 · CPU 32% · MEM 41 GiB/64 GiB"
    tiny = fitted_host_line(HOST, snap, None, NOW, 30).plain
    assert len(tiny) == 30
    assert tiny.endswith("…")


@given(st.integers(1, 220), st.booleans())
def test_a_host_line_never_outgrows_its_width(width: int, second: bool) -> None:
    snap = second_host_snapshot() if second else fleet_snapshot()
    line = fitted_host_line(snap.host, snap, None, NOW, width)
    assert "\n" not in line.plain
    if len(snap.host) >= width:  # a host's name is never cut: it wraps
        assert line.plain.startswith(snap.host)
        return
    assert line.cell_len <= width
    # a wider line never leaves out more
    wider = fitted_host_line(snap.host, snap, None, NOW, width + 1)
    assert wider.cell_len >= line.cell_len


def test_confirmations_name_vms_and_hosts() -> None:
    one = [VmRef(HOST, "u1", "web-01")]
    text = confirm_text(Action.SHUTDOWN, one).plain
    assert text.startswith("Shutdown this VM?")
    assert "web-01 on qemu:///system" in text
    many = [VmRef("hv-a", f"u{i}", f"vm-{i:02d}") for i in range(10)] + [VmRef("hv-b", "x", "z")]
    t = targets_text(many).plain
    assert "vm-00, vm-01" in t
    assert "… and 2 more on hv-a" in t
    assert t.endswith("z on hv-b")
    assert "cuts the power" in confirm_text(Action.FORCE_OFF, many).plain
    assert needs_typed_count(Action.FORCE_OFF, many)
    assert not needs_typed_count(Action.FORCE_OFF, one)
    assert not needs_typed_count(Action.SHUTDOWN, many)


def test_each_action_has_one_key_on_both_screens() -> None:
    assert [b.action for b in ACTION_BINDINGS] == [f"vm('{a.value}')" for a in Action]
    assert [b.description for b in ACTION_BINDINGS][2] == "Force off"
    assert len({b.key for b in ACTION_BINDINGS}) == len(Action)
    for screen in (MachineTable, VmDetailScreen):
        assert [b for b in screen.BINDINGS if b in ACTION_BINDINGS] == list(ACTION_BINDINGS)


def test_activity_and_outcome_words() -> None:
    running, retrying, _ok, _failed = task_updates()
    assert activity_text(running, NOW) == "⟳ shutdown…"
    assert activity_text(retrying, NOW) == "⟳ start retry 2/3 in 2s"
    assert activity_text(dataclasses.replace(running, state=TaskState.PENDING), NOW) == (
        "⟳ shutdown queued"
    )
    assert activity_text(dataclasses.replace(running, state=TaskState.SUCCEEDED), NOW) is None
    verified, failed = audit_records()
    assert outcome_text(verified) == (
        "✔ reboot done",
        "web-01: reboot verified in 7.4 s",
        "information",
    )
    assert outcome_text(failed)[1] == "web-01: start failed — domain is already running"
    ignored = dataclasses.replace(verified, action="shutdown", outcome=Outcome.IGNORED)
    assert outcome_text(ignored)[0] == "⚠ shutdown ignored"
    cancelled = dataclasses.replace(verified, outcome=Outcome.CANCELLED)
    assert outcome_text(cancelled)[2] == "warning"


def test_graph_coordinates_and_markers() -> None:
    pts = [(NOW - 400, 1.0), (NOW - 120, 2048.0), (NOW, 1024.0), (NOW + 5, 9.0)]
    xs, ys = to_xy(pts, NOW, Span.MIN5, 1024.0)
    assert xs == [-2.0, 0.0]
    assert ys == [2.0, 1.0]
    assert to_xy(pts, NOW, Span.DAY1, 1.0)[0][0] == pytest.approx(-400 / 3600)
    verified, failed = audit_records()
    marks = markers_for([], [failed, verified], [])
    assert [m.color for m in marks] == ["green", "red"]
    assert marks[0].label == "reboot by alice: verified"


def test_ui_settings_parse_check_and_write_back(tmp_path: Path) -> None:
    assert ui_settings(Config({})) == UiSettings()
    cfg = Config({"ui": {"theme": "nord", "refresh": 2, "stale_after": 30}})
    assert ui_settings(cfg) == UiSettings("nord", 2.0, 30.0)
    with pytest.raises(ConfigError, match=r"ui\.refresh.*at least 0\.2"):
        ui_settings(Config({"ui": {"refresh": 0.01}}))
    with pytest.raises(ConfigError, match=r"ui\.colour.*unknown key"):
        ui_settings(Config({"ui": {"colour": "red"}}))
    # the old spellings (refresh, stale_after) above parse as the new ones do
    new = {"theme": "nord", "refresh_s": 2, "stale_after_s": 30}
    assert ui_settings(Config({"ui": new})) == ui_settings(cfg)
    doc = '# mine\n[[hosts]]\nuri = "a"\n\n[ui]\ntheme = "x"\nold = 1\n\n[pool]\nmax = 3\n'
    out = with_ui_section(doc, UiSettings("nord", 0.5, 10.0))
    data = tomllib.loads(out)
    # the [ui] keys are set (current spellings); a key we do not write is the user's
    assert data["ui"] == {"theme": "nord", "old": 1, "refresh_s": 0.5, "stale_after_s": 10.0}
    assert data["pool"] == {"max": 3}
    assert out.startswith("# mine\n[[hosts]]")
    appended = tomllib.loads(with_ui_section("[pool]\nmax = 3", UiSettings()))
    assert appended["ui"]["theme"] == "textual-dark"
    path = tmp_path / "sub" / "config.toml"
    save_ui_settings(path, UiSettings("gruvbox", 1.0, 10.0))
    assert ui_settings(load_config(path)).theme == "gruvbox"
    assert path.stat().st_mode & 0o777 == 0o600  # a new config may name credentials
    path.chmod(0o640)
    save_ui_settings(path, UiSettings("nord", 1.0, 10.0))
    assert path.stat().st_mode & 0o777 == 0o640  # the owner's choice is kept
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]
    hostile = UiSettings('a"b\n[x]', 1.0, 10.0)
    assert ui_settings(Config(tomllib.loads(with_ui_section("", hostile)))).theme == 'a"b\n[x]'


def test_per_host_read_only_and_ring_sizes() -> None:
    cfg = Config(
        {
            "hosts": [
                {"uri": "qemu+ssh://root:pw@hv9/system", "read_only": True},
                {"uri": "qemu:///system", "name": "local", "read_only": False},
                {"uri": "test:///default", "name": "lab", "read_only": True},
            ]
        }
    )
    hosts = read_only_hosts(cfg)
    assert "lab" in hosts
    assert "local" not in hosts
    assert not any("pw" in h for h in hosts)
    assert history_for(2.0).fine_points == 151
    assert history_for(0.01).fine_points == 1200
    assert history_for(60.0).fine_points == 30


def test_audit_records_for_the_canned_fleet_are_plausible() -> None:
    assert all(isinstance(a, AuditRecord) for a in audit_records())


def test_newer_snapshots_and_connection_states_replace_pending_ones() -> None:
    from tests.canned import host_connections, second_host_snapshot
    from virtwatch.tui.messages import RecordArrived, SnapshotArrived

    a1, a2 = SnapshotArrived(fleet_snapshot(tick=1)), SnapshotArrived(fleet_snapshot(tick=2))
    b = SnapshotArrived(second_host_snapshot())
    assert a2.can_replace(a1)
    assert not b.can_replace(a1)  # another host's snapshot is not stale
    c1, c2 = (RecordArrived(c) for c in host_connections())
    assert c1.can_replace(RecordArrived(host_connections()[0]))
    assert not c1.can_replace(c2)
    assert not RecordArrived(audit_records()[0]).can_replace(RecordArrived(audit_records()[1]))
