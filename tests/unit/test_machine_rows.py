"""The Machines pane's rows without a screen: which VMs show, in what order, what each
row says, which rows (and columns) changed text since the view last asked, and how the
columns fit."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.canned import HOST, HOST2, NOW, domain, fleet_snapshot, second_host_snapshot
from virtwatch.core.model import DomainSample, Snapshot
from virtwatch.tui.machine_rows import MachineRows, row_key
from virtwatch.tui.rows import COLUMN_INDEX, SORTABLE, sort_value, visible_columns

NAME, STATE, CPU, MEM, MARK = (COLUMN_INDEX[k] for k in ("name", "state", "cpu", "mem", "mark"))
WEB01 = "10000000-0000-4000-8000-000000000001"


def snap_of(*doms: DomainSample, host: str = HOST, tick: int = 1, at: float = NOW) -> Snapshot:
    base = fleet_snapshot(taken_at=at) if host == HOST else second_host_snapshot(taken_at=at)
    return dataclasses.replace(base, domains=doms, tick=tick)


def names(model: MachineRows) -> list[str]:
    return [model.rows[k].sample.name for k in model.order]


def fleet_rows() -> MachineRows:
    model = MachineRows()
    model.apply(fleet_snapshot(), NOW)
    return model


def column_of(model: MachineRows, key: str) -> int:
    return [c.key for c in model.columns].index(key)


# --- rows and their order ---------------------------------------------------------------


def test_a_snapshot_adds_every_vm_sorted_by_name_formatted_at_once() -> None:
    model = MachineRows()
    applied = model.apply(fleet_snapshot(), NOW)
    assert (applied.added, applied.removed, applied.resorted) == (12, 0, True)
    assert names(model)[:3] == ["[bold red]x[/]", "backup", "build-runner"]
    assert model.take_moved()
    assert not model.take_moved()  # answered once
    cells = model.shown_cells(NOW)
    by_name = {c[NAME]: c for c in cells.values()}
    assert by_name["staging-api"][STATE] == "paused: I/O error"
    assert by_name["db-primary"][CPU].startswith(" 61.2 ")
    assert model.deferred() == 0


def test_a_vm_that_goes_leaves_with_its_mark_and_activity() -> None:
    model = fleet_rows()
    key = row_key(HOST, WEB01)
    model.toggle_mark(key)
    model.set_activity(key, "⟳ shutdown requested")
    model.take_moved()
    snap = fleet_snapshot()
    rest = tuple(d for d in snap.domains if d.uuid != WEB01)
    applied = model.apply(dataclasses.replace(snap, domains=rest, tick=2), NOW)
    assert (applied.added, applied.removed, applied.resorted) == (0, 1, False)
    assert model.take_moved()
    assert key not in model.rows
    assert key not in model.order
    assert model.marked == set()
    assert model.activity(key) is None


def test_new_values_wait_to_be_formatted_and_only_changed_columns_are_written() -> None:
    model = fleet_rows()
    model.take_moved()
    model.take_written()
    snap = fleet_snapshot()
    doms = tuple(
        d._replace(mem_used_kib=1024 * 1024) if d.uuid == WEB01 else d for d in snap.domains
    )
    applied = model.apply(dataclasses.replace(snap, domains=doms, tick=2), NOW)
    assert (applied.added, applied.removed, applied.resorted) == (0, 0, False)
    assert not model.take_moved()  # sorted by name: nobody moved
    assert model.deferred() == 12  # every row has a new sample, none formatted yet
    key = row_key(HOST, WEB01)
    version = model.rows[key].version
    others = [k for k in model.order if k != key]
    assert model.format_rows(others, NOW) == 0  # same text: nothing written
    assert model.take_written() == {}
    assert model.format_rows([key], NOW) == 1
    assert model.rows[key].cells[MEM] == "1.0/2.0 GiB"
    assert model.rows[key].version > version
    mem = column_of(model, "mem")
    assert model.take_written() == {key: (mem, mem)}
    assert model.deferred() == 0


def test_a_row_formatted_while_drawn_is_not_written_again() -> None:
    model = fleet_rows()
    model.take_written()
    snap = fleet_snapshot()
    doms = tuple(d._replace(cpu_pct=50.0) if d.uuid == WEB01 else d for d in snap.domains)
    model.apply(dataclasses.replace(snap, domains=doms, tick=2), NOW)
    key = row_key(HOST, WEB01)
    row = model.ensure(key, NOW, drawing=True)
    assert row is not None
    assert row.cells[CPU].startswith(" 50.0 ")
    assert key not in model.take_written()


def test_sorted_by_cpu_a_new_value_moves_the_row() -> None:
    model = fleet_rows()
    model.sort_by("cpu", reverse=True)
    assert names(model)[:3] == ["build-runner", "db-primary", "web-01"]
    model.take_moved()
    snap = fleet_snapshot()
    doms = tuple(d._replace(cpu_pct=99.9) if d.name == "cache-01" else d for d in snap.domains)
    applied = model.apply(dataclasses.replace(snap, domains=doms, tick=2), NOW)
    assert applied.resorted
    assert model.take_moved()
    assert names(model)[0] == "cache-01"
    assert model.index_of(row_key(HOST, WEB01)) == 3


def test_sort_by_the_same_column_flips_and_a_bad_column_is_refused() -> None:
    model = fleet_rows()
    model.sort_by("name")
    assert model.sort_reverse
    assert names(model)[-1] == "[bold red]x[/]"
    assert model.fit_dirty  # the label's arrow changed
    assert model.fit(None).label("name") == "Name ▼"
    with pytest.raises(ValueError, match="cannot sort by 'mark'"):
        model.sort_by("mark")


def test_vms_of_two_hosts_with_the_same_uuid_and_name_sort_by_host() -> None:
    model = MachineRows()
    twin = domain("web-01", uuid=WEB01)
    model.apply(snap_of(twin, host=HOST2), NOW)
    model.apply(snap_of(twin, host=HOST), NOW)
    assert model.order == sorted([row_key(HOST, WEB01), row_key(HOST2, WEB01)])


samples = st.builds(
    lambda i, cpu, mem, state, name: domain(
        f"vm-{name}",
        state=state,
        cpu=cpu,
        used_mib=mem,
        uuid=f"30000000-0000-4000-8000-{i:012d}",
    ),
    st.integers(0, 10**6),
    st.one_of(st.none(), st.floats(0, 100)),
    st.one_of(st.none(), st.integers(1, 4096)),
    st.sampled_from([1, 3, 5]),
    st.sampled_from(["a", "b", "B", "c"]),
)


@given(
    st.lists(samples, max_size=30, unique_by=lambda d: d.uuid),
    st.sampled_from(SORTABLE),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_the_order_is_total_and_stable_whatever_order_vms_come_in(
    doms: list[DomainSample], column: str, reverse: bool, rnd: object
) -> None:
    """The same VMs, over two hosts, coming in any order sort the same way: by the
    column's raw value, then name, uuid and host."""
    orders = []
    for _ in range(2):
        model = MachineRows()
        model.sort_by(column, reverse=reverse)
        hosts = [(HOST, list(doms[::2])), (HOST2, list(doms[1::2]))]
        rnd.shuffle(hosts)  # type: ignore[attr-defined]
        for host, some in hosts:
            rnd.shuffle(some)  # type: ignore[attr-defined]
            model.apply(snap_of(*some, host=host), NOW)
        orders.append(model.order)
        keys = [(sort_value(column, r.host, r.sample), k) for k, r in model.rows.items()]
        assert model.order == [k for _v, k in sorted(keys, reverse=reverse)]
    assert orders[0] == orders[1]


# --- filter, marks, activity, tags --------------------------------------------------------


def test_a_filter_keeps_what_matches_and_follows_new_states() -> None:
    model = fleet_rows()
    model.set_filter("state:paused")
    assert names(model) == ["staging-api"]
    assert model.filter_text == "state:paused"
    assert model.take_moved()
    snap = fleet_snapshot()
    paused = domain("web-02", state=3, uuid="10000000-0000-4000-8000-000000000002")
    doms = tuple(paused if d.name == "web-02" else d for d in snap.domains)
    applied = model.apply(dataclasses.replace(snap, domains=doms, tick=2), NOW)
    assert (applied.added, applied.resorted) == (1, True)
    assert names(model) == ["staging-api", "web-02"]
    model.apply(dataclasses.replace(snap, tick=3), NOW)  # web-02 running again
    assert names(model) == ["staging-api"]
    model.set_filter("")
    assert len(model.order) == 12


def test_tags_are_matched_by_the_filter() -> None:
    model = fleet_rows()
    model.set_filter("tag:frontend")
    assert model.order == []
    model.set_tags({row_key(HOST, WEB01): ("frontend",)})
    assert names(model) == ["web-01"]


def test_marks_and_activity_show_in_the_row_once_formatted() -> None:
    model = fleet_rows()
    key = row_key(HOST, WEB01)
    model.toggle_mark(key)
    model.toggle_mark("nowhere/none")  # a VM it does not know: nothing
    assert model.marked == {key}
    model.set_activity(key, "⟳ shutdown requested")
    assert model.rows[key].dirty
    model.format_rows([key], NOW)
    cells = model.rows[key].cells
    assert (cells[MARK], cells[STATE]) == ("●", "running ⟳ shutdown requested")
    mark, state = column_of(model, "mark"), column_of(model, "state")
    assert model.take_written()[key] == (mark, state)
    model.clear_marks()
    model.set_activity(key, None)
    model.format_rows([key], NOW)
    assert (model.rows[key].cells[MARK], model.rows[key].cells[STATE]) == (" ", "running")


def test_rows_of_a_host_that_stopped_answering_say_how_old_they_are() -> None:
    model = fleet_rows()
    key = row_key(HOST, WEB01)
    model.take_written()
    model.age(NOW + 5)  # within stale_after_s: nothing to do
    assert model.deferred() == 0
    model.age(NOW + 75)
    assert model.deferred() == 12
    assert model.format_rows(model.order, NOW + 75) > 12  # every cell of every row: dimmed
    row = model.rows[key]
    assert row.cells[STATE] == "running · 1m15s old"
    assert row.look[1]
    first, last = model.take_written()[key]
    assert (first, last) == (0, len(model.columns) - 1)
    model.apply(fleet_snapshot(taken_at=NOW + 75, tick=2), NOW + 75)  # it answers again
    model.format_rows(model.order, NOW + 75)
    assert model.rows[key].cells[STATE] == "running"
    assert not model.rows[key].look[1]


# --- columns ----------------------------------------------------------------------------------


def test_a_second_host_adds_the_host_column() -> None:
    model = fleet_rows()
    assert "host" not in model.fit(None).keys
    assert not model.take_relaid()
    model.apply(second_host_snapshot(), NOW)
    assert model.take_relaid()
    assert model.columns == visible_columns(multi_host=True)
    layout = model.fit(None)
    assert layout.width("host") == max(len(HOST), len(HOST2))
    assert len(model.order) == 15


def test_a_column_is_as_wide_as_its_widest_shown_text_and_shrinks_when_it_goes() -> None:
    model = fleet_rows()
    before = model.fit(None)
    assert not model.fit_dirty
    snap = fleet_snapshot()
    long = domain("aa-old", state=5, reason=2)  # 'shut off: destroyed by admin'
    model.apply(dataclasses.replace(snap, domains=(*snap.domains, long), tick=2), NOW)
    assert model.fit_dirty
    assert model.fit(None).width("state") == len("shut off: destroyed by admin")
    model.apply(dataclasses.replace(snap, tick=3), NOW)
    assert model.fit(None) == before
    # hidden by the filter: its text no longer counts
    model.apply(dataclasses.replace(snap, domains=(*snap.domains, long), tick=4), NOW)
    model.set_filter("web")
    assert model.fit(None).width("name") == len("web-01")


def test_short_of_room_labels_get_short_then_state_is_cut_to_its_floor() -> None:
    model = fleet_rows()
    wide = model.fit(None)
    assert not wide.short_labels
    assert wide.label("mem") == "Memory used / alloc"
    narrow = model.fit(sum(wide.widths) - 10)
    assert narrow.short_labels
    assert narrow.label("mem") == "Mem used/alloc"
    tight = model.fit(60)
    floor = next(c.floor for c in model.columns if c.key == "state")
    assert tight.width("state") == floor
