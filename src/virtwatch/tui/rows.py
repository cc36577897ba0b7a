"""What each Machines row says, how rows sort, and which rows a filter keeps. Pure.

A row's cells are plain strings, so "did anything change" is one tuple comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from virtwatch.core.collect.history import io_rate
from virtwatch.core.model import DomainSample, DomainState
from virtwatch.tui.format import (
    UNKNOWN,
    fmt_duration,
    fmt_figures,
    fmt_mem_short,
    fmt_pct_short,
    fmt_rate_short,
    sparkline,
)

SPARK_WIDTH = 8

# I/O measurements the collector may provide (issue #4); a column shows once they exist
_FIELDS = set(DomainSample._fields)
HAS_DISK = "disk" in _FIELDS
HAS_NET = "net" in _FIELDS


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    numeric: bool = False
    short: str = ""  # the label when the table is short of room ("": the label)
    floor: int = 0  # short of room, its text is cut (with '…') down to this width; 0: never


ALL_COLUMNS: tuple[Column, ...] = (
    Column("mark", " "),
    Column("host", "Host", floor=14),
    Column("name", "Name", floor=16),
    Column("state", "State", floor=18),  # 'shut off: crashed', 'paused: I/O error' fit
    Column("vcpus", "vCPU", numeric=True),
    Column("cpu", "CPU %", numeric=True),
    Column("mem", "Memory used / alloc", numeric=True, short="Mem used/alloc"),
    # figures without their unit where the label says it: CPU '12.5', rates '1.2M  80K'
    Column("disk", "Disk read / write B/s", numeric=True, short="Disk r/w B/s"),
    Column("net", "Net rx / tx B/s", numeric=True, short="Net rx/tx B/s"),
    Column("uptime", "Uptime"),
)
COLUMN_INDEX = {c.key: i for i, c in enumerate(ALL_COLUMNS)}
CUT_FIRST = ("state", "host", "name")  # short of room, cut in this order (each to its floor)
SORTABLE = tuple(c.key for c in ALL_COLUMNS if c.key != "mark")


def visible_columns(*, multi_host: bool) -> tuple[Column, ...]:
    """The columns to show: Host only for several hosts, rates once collected."""
    out = []
    for c in ALL_COLUMNS:
        if c.key == "host" and not multi_host:
            continue
        if (c.key == "disk" and not HAS_DISK) or (c.key == "net" and not HAS_NET):
            continue
        out.append(c)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Fit:
    widths: tuple[int, ...]  # each column's width in cells, padding excluded
    short_labels: bool


def fit_widths(
    columns: Sequence[Column],
    content: Sequence[int],
    labels: Sequence[tuple[int, int]],
    room: int | None,
) -> Fit:
    """Column widths for `room` cells (padding excluded; None: as much as they want).

    A column is as wide as the widest text it shows now and its label. Short of room,
    the short labels come first; then State, Host and Name (`CUT_FIRST`) are cut, each
    only as far as needed and never below its floor (nor its label); what still does
    not fit scrolls. `labels` holds each column's (label, short label) widths."""
    full = [max(c, label) for c, (label, _) in zip(content, labels, strict=True)]
    if room is None or sum(full) <= room:
        return Fit(tuple(full), short_labels=False)
    widths = [max(c, short) for c, (_, short) in zip(content, labels, strict=True)]
    over = sum(widths) - room
    keys = [c.key for c in columns]
    for key in CUT_FIRST:
        if over <= 0:
            break
        if key not in keys:
            continue
        i = keys.index(key)
        least = max(columns[i].floor, labels[i][1])
        cut = min(over, max(0, widths[i] - least))
        widths[i] -= cut
        over -= cut
    return Fit(tuple(widths), short_labels=True)


Cells = tuple[str, ...]  # one string per ALL_COLUMNS entry


def _rate(d: DomainSample, name: str) -> float | None:
    group, _, field = name.partition("_")
    return io_rate(d, group, field)


def uptime_figure(d: DomainSample, now: float) -> str:
    """How long a running VM's QEMU process has lived ('3h12m'); '—' otherwise."""
    if d.state is DomainState.RUNNING and d.started_at is not None:
        return fmt_duration(now - d.started_at)
    return UNKNOWN


def uptime_text(d: DomainSample, now: float) -> str:
    figure = uptime_figure(d, now)
    return figure if figure == UNKNOWN else f"up {figure}"


_PLAIN_RUNNING = (0, 1, 5)  # unknown, booted, unpaused: nothing worth saying


def reason_text(d: DomainSample) -> str:
    """'paused: I/O error', 'shut off: crashed'; a VM running after an ordinary boot
    is just 'running'."""
    if d.state is DomainState.RUNNING and d.reason in _PLAIN_RUNNING:
        return d.state.label
    return d.state_text


def state_text(d: DomainSample, *, activity: str | None, stale_s: float | None) -> str:
    """The state with its reason, then an action in progress, then how old a stale
    value is."""
    text = reason_text(d)
    if activity:
        text += f" {activity}"
    if stale_s is not None:
        text += f" · {fmt_duration(stale_s)} old"
    return text


_PCT_WIDTH = len(fmt_pct_short(0.0))


def _rates(a: float | None, b: float | None) -> str:
    """A rate pair as two aligned short figures; the column's label says 'B/s'."""
    return fmt_figures(fmt_rate_short(a), fmt_rate_short(b))


def row_cells(
    host: str,
    d: DomainSample,
    now: float,
    *,
    spark: Sequence[float] = (),
    marked: bool = False,
    activity: str | None = None,
    stale_s: float | None = None,
) -> Cells:
    """The plain text of every cell of a VM's row."""
    cpu = fmt_pct_short(d.cpu_pct)
    if d.state.is_active:
        # an unknown figure sits where the figure would, right-aligned with the others
        cpu = f"{cpu:>{_PCT_WIDTH}} {sparkline(list(spark), SPARK_WIDTH, top=100.0)}"
    disk = getattr(d, "disk", None)
    net = getattr(d, "net", None)
    return (
        "●" if marked else " ",
        host,
        d.name,
        state_text(d, activity=activity, stale_s=stale_s),
        UNKNOWN if d.vcpus is None else str(d.vcpus),
        cpu,
        fmt_mem_short(d.mem_used_kib, d.mem_alloc_kib),
        UNKNOWN if disk is None else _rates(disk.rd_bps, disk.wr_bps),
        UNKNOWN if net is None else _rates(net.rx_bps, net.tx_bps),
        uptime_figure(d, now),
    )


SortValue = tuple[int, float, str]


def _num(value: float | int | None) -> SortValue:
    # unknown values sort before every known one
    return (0, 0.0, "") if value is None else (1, float(value), "")


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None and b is None else (a or 0.0) + (b or 0.0)


_SORT: dict[str, Callable[[str, DomainSample], SortValue]] = {
    "host": lambda h, d: (1, 0.0, h.lower()),
    "name": lambda h, d: (1, 0.0, d.name.lower()),
    "state": lambda h, d: (1, float(d.state), d.state_text),
    "vcpus": lambda h, d: _num(d.vcpus),
    "cpu": lambda h, d: _num(d.cpu_pct),
    "mem": lambda h, d: _num(d.mem_used_kib),
    "disk": lambda h, d: _num(_sum(_rate(d, "disk_rd_bps"), _rate(d, "disk_wr_bps"))),
    "net": lambda h, d: _num(_sum(_rate(d, "net_rx_bps"), _rate(d, "net_tx_bps"))),
    "uptime": lambda h, d: _num(None if d.started_at is None else -d.started_at),
}


def sort_value(column: str, host: str, d: DomainSample) -> tuple[SortValue, str, str]:
    """A total order for `column`; name and uuid break ties so the order is stable."""
    return (_SORT[column](host, d), d.name.lower(), d.uuid)


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed filter: bare words match name, host, state or tag; `key:value`
    words (name:, host:, state:, tag:) match only that field. All words must match."""

    words: tuple[tuple[str, str], ...]

    @property
    def empty(self) -> bool:
        return not self.words


_FIELDS_OF_QUERY = ("name", "host", "state", "tag")


def parse_query(text: str) -> Query:
    words: list[tuple[str, str]] = []
    for raw in text.lower().split():
        field, sep, value = raw.partition(":")
        if sep and field in _FIELDS_OF_QUERY:
            if value:
                words.append((field, value))
        else:
            words.append(("", raw))
    return Query(tuple(words))


def matches(q: Query, host: str, d: DomainSample, tags: Sequence[str] = ()) -> bool:
    if q.empty:
        return True
    fields = {
        "name": (d.name.lower(),),
        "host": (host.lower(),),
        "state": (d.state.label, d.state_text.lower()),
        "tag": tuple(t.lower() for t in tags),
    }
    for field, value in q.words:
        pool = fields[field] if field else tuple(v for vs in fields.values() for v in vs)
        if not any(value in v for v in pool):
            return False
    return True
