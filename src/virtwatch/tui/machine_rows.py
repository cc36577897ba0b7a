"""The Machines pane's rows apart from their drawing: every VM it was told about, which
of them the filter keeps and in what order, what each shown row says, how wide each
column's text is, and which rows changed text since the view last asked. Plain Python.

A row is formatted (its cells' text worked out) when the view asks for it — the rows in
its window after each update, the others when they are drawn — so an update of 1,000 VMs
formats only the rows on screen; sort keys and the filter use every row's raw sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rich.cells import cell_len

from virtwatch.core.collect.history import MetricHistory
from virtwatch.core.model import DomainSample, DomainState, Snapshot
from virtwatch.tui.ports import VmRef
from virtwatch.tui.rows import (
    COLUMN_INDEX,
    SORTABLE,
    SPARK_WIDTH,
    Cells,
    Column,
    SortValue,
    fit_widths,
    matches,
    parse_query,
    row_cells,
    sort_value,
    visible_columns,
)

DEFAULT_STALE_AFTER_S = 10.0

Look = tuple[DomainState, bool]  # (state, stale): what a row's styles come from
SortKey = tuple[SortValue, str, str]
_BY_NAME = ("name", "host")  # sort columns whose keys (host, name, uuid) only a rename moves


def row_key(host: str, uuid: str) -> str:
    return f"{host}/{uuid}"


@dataclass(slots=True)
class Row:
    host: str
    sample: DomainSample  # the latest, whether or not `cells` says it yet
    cells: Cells  # its text when last formatted
    look: Look  # (state, stale) when last formatted
    sort_key: SortKey  # by the current sort column, from the raw sample
    shown: bool = False  # the filter keeps it
    dirty: bool = False  # sample, mark, activity or age moved on since `cells`
    version: int = 0  # a new number whenever a shown row's text or look changes


@dataclass(frozen=True, slots=True)
class Layout:
    """The columns as they are drawn: labels and text widths (padding excluded)."""

    columns: tuple[Column, ...]
    labels: tuple[str, ...]
    widths: tuple[int, ...]
    short_labels: bool

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.columns)

    def label(self, key: str) -> str:
        return self.labels[self.keys.index(key)]

    def width(self, key: str) -> int:
        return self.widths[self.keys.index(key)]


@dataclass(frozen=True, slots=True)
class Applied:
    added: int  # rows the filter keeps that came
    removed: int  # shown rows that went
    resorted: bool  # the shown rows were sorted again


class MachineRows:
    """The rows of the Machines pane: VMs by row key (`row_key(host, uuid)`)."""

    def __init__(
        self,
        *,
        history: MetricHistory | None = None,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> None:
        self.history = history  # sparklines of CPU % (None: none drawn)
        self.stale_after_s = stale_after_s
        self.rows: dict[str, Row] = {}
        self.columns: tuple[Column, ...] = visible_columns(multi_host=False)
        self.filter_text = ""
        self._query = parse_query("")
        self.sort_column = "name"
        self.sort_reverse = False
        self.marked: set[str] = set()
        self.tags: Mapping[str, Sequence[str]] = {}  # row key -> tags (domain details)
        self.order: list[str] = []  # shown rows in display order
        self._index: dict[str, int] | None = None  # row key -> place in `order`, on demand
        self._hosts: dict[str, float] = {}  # host -> taken_at of its latest snapshot
        self._flagged: set[str] = set()  # hosts whose collector says they are stale
        self._activity: dict[str, str] = {}
        # column -> {text width: how many shown rows hold a text that wide}
        self._counts: dict[str, dict[int, int]] = {}
        self._content: dict[str, int] = {}  # column -> its widest text on a shown row
        self.fit_dirty = True  # a column's widest text (or a label) changed since `fit`
        self._versions = 0  # the last version handed out (never reused)
        self._written: dict[str, tuple[int, int]] = {}
        self._moved = False
        self._relaid = False

    # --- snapshots ------------------------------------------------------------------

    def apply(self, snap: Snapshot, now: float) -> Applied:
        """Take `snap`'s VMs of `snap.host`: add and remove rows, keep every row's sample
        and sort key; the text of the changed rows waits for `format_rows`/`ensure`."""
        host = snap.host
        self._hosts[host] = snap.taken_at
        if getattr(snap, "stale", False):
            self._flagged.add(host)
        else:
            self._flagged.discard(host)
        if len(self._hosts) > 1 and not any(c.key == "host" for c in self.columns):
            self._set_columns(visible_columns(multi_host=True))
        stale = self._stale_s(host, now) is not None
        prefix = f"{host}/"
        wanted = {f"{prefix}{d.uuid}": d for d in snap.domains}  # by row_key
        rows = self.rows
        removed = added = 0
        resort = False
        column = self.sort_column
        by_name = column in _BY_NAME
        filtering = not self._query.empty
        for key in [k for k in rows if k.startswith(prefix) and k not in wanted]:
            row = rows.pop(key)
            if row.shown:
                self._hide(key, row)
                removed += 1
            self.marked.discard(key)
            self._activity.pop(key, None)
        for key, d in wanted.items():
            found = rows.get(key)
            if found is None:
                # formatted at once: a new row's text sets its columns' widths
                cells = self._cells(key, host, d, now)
                row = rows[key] = Row(host, d, cells, (d.state, stale), sort_value(column, host, d))
                if self._matches(key, row):
                    self._show(key, row)
                    added += 1
                    resort = True
                continue
            row = found
            old = row.sample
            row.sample = d
            row.dirty = True
            if not by_name or d.name != old.name:
                sort_key = sort_value(column, host, d)
                if sort_key != row.sort_key:
                    row.sort_key = sort_key
                    resort = resort or row.shown
            if filtering and (d.name, d.state, d.state_text) != (
                old.name,
                old.state,
                old.state_text,
            ):
                keep = self._matches(key, row)
                if keep and not row.shown:
                    self._show(key, row)
                    added += 1
                    resort = True
                elif row.shown and not keep:
                    self._hide(key, row)
                    removed += 1
        if resort:
            self._sort()
        elif removed:
            self._set_order([k for k in self.order if (r := rows.get(k)) is not None and r.shown])
        return Applied(added, removed, resort)

    def age(self, now: float) -> None:
        """Rows whose staleness may have moved on (call about once a second) wait to be
        formatted again."""
        for row in self.rows.values():
            if row.look[1] or self._stale_s(row.host, now) is not None:
                row.dirty = True

    # --- formatting -------------------------------------------------------------------

    def format_rows(self, keys: Iterable[str], now: float) -> int:
        """Format the rows of `keys` that changed; returns how many cells were rewritten."""
        n = 0
        rows = self.rows
        for key in keys:
            row = rows.get(key)
            if row is not None and row.dirty:
                n += self._format(key, row, now)
        return n

    def ensure(self, key: str, now: float, *, drawing: bool = False) -> Row | None:
        """The row, formatted if it changed since. `drawing`: it is being drawn right
        now, so it need not be repainted again."""
        row = self.rows.get(key)
        if row is not None and row.dirty:
            self._format(key, row, now)
            if drawing:
                self._written.pop(key, None)
        return row

    def deferred(self) -> int:
        """Shown rows whose text waits for them to be drawn."""
        return sum(1 for r in self.rows.values() if r.dirty and r.shown)

    def shown_cells(self, now: float) -> dict[str, Cells]:
        """What each shown row says, by row key (every changed row formatted first)."""
        self.format_rows([k for k, r in self.rows.items() if r.shown and r.dirty], now)
        return {k: r.cells for k, r in self.rows.items() if r.shown}

    # what changed since the view last asked: each `take_*` answers once

    def take_moved(self) -> bool:
        """Rows came, went or changed places: every row line may differ."""
        moved, self._moved = self._moved, False
        return moved

    def take_relaid(self) -> bool:
        """The columns changed (a second host): the whole table differs."""
        relaid, self._relaid = self._relaid, False
        return relaid

    def take_written(self) -> dict[str, tuple[int, int]]:
        """Shown rows whose text changed -> (first, last) column index rewritten."""
        written, self._written = self._written, {}
        return written

    # --- filter, sort, marks, activity, tags ----------------------------------------------

    def set_filter(self, text: str) -> None:
        """Show only the VMs `text` matches (see `rows.Query`); "" shows all."""
        self.filter_text = text
        self._query = parse_query(text)
        for key, row in self.rows.items():
            keep = self._matches(key, row)
            if keep and not row.shown:
                self._show(key, row)
            elif row.shown and not keep:
                self._hide(key, row)
        self._sort()

    def set_tags(self, tags: Mapping[str, Sequence[str]]) -> None:
        self.tags = tags
        self.set_filter(self.filter_text)

    def sort_by(self, column: str, *, reverse: bool | None = None) -> None:
        """Sort by `column`; choosing the current column again flips the order."""
        if column not in SORTABLE:
            raise ValueError(f"cannot sort by {column!r}; one of {', '.join(SORTABLE)}")
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        if column != self.sort_column:
            for row in self.rows.values():
                row.sort_key = sort_value(column, row.host, row.sample)
        self.sort_column, self.sort_reverse = column, reverse
        self.fit_dirty = True  # the sort mark moved: labels' widths changed
        self._sort()

    def toggle_mark(self, key: str) -> None:
        if key in self.marked:
            self.marked.discard(key)
        elif key in self.rows:
            self.marked.add(key)
        self._touch(key)

    def clear_marks(self) -> None:
        keys = list(self.marked)
        self.marked.clear()
        for key in keys:
            self._touch(key)

    def set_activity(self, key: str, text: str | None) -> None:
        """An action's progress, shown in the VM's state cell (None clears it)."""
        if text is None:
            self._activity.pop(key, None)
        else:
            self._activity[key] = text
        self._touch(key)

    def activity(self, key: str) -> str | None:
        return self._activity.get(key)

    # --- reading ------------------------------------------------------------------------

    def index_of(self, key: str) -> int | None:
        """Where a shown row is in the display order (None: not shown)."""
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.order)}
        return self._index.get(key)

    def ref(self, key: str) -> VmRef | None:
        row = self.rows.get(key)
        return None if row is None else VmRef(row.host, row.sample.uuid, row.sample.name)

    def label(self, c: Column, *, short: bool) -> str:
        text = c.short if short and c.short else c.label
        if c.key == self.sort_column:
            text += " ▼" if self.sort_reverse else " ▲"
        return text

    def fit(self, room: int | None) -> Layout:
        """The columns fitted to the text the shown rows hold now and `room` cells
        (padding excluded; None: as wide as they want), see `rows.fit_widths`."""
        self.fit_dirty = False
        columns = self.columns
        labels = [
            (cell_len(self.label(c, short=False)), cell_len(self.label(c, short=True)))
            for c in columns
        ]
        content = [self._content.get(c.key, 0) for c in columns]
        fit = fit_widths(columns, content, labels, room)
        texts = tuple(self.label(c, short=fit.short_labels) for c in columns)
        return Layout(columns, texts, fit.widths, fit.short_labels)

    # --- inside -------------------------------------------------------------------------

    def _matches(self, key: str, row: Row) -> bool:
        return matches(self._query, row.host, row.sample, self.tags.get(key, ()))

    def _stale_s(self, host: str, now: float) -> float | None:
        age = now - self._hosts.get(host, now)
        return age if age > self.stale_after_s or host in self._flagged else None

    def _cells(self, key: str, host: str, d: DomainSample, now: float) -> Cells:
        spark: Sequence[float] = ()
        if self.history is not None and d.state.is_active:
            spark = self.history.sparkline(host, d.uuid, "cpu_pct", SPARK_WIDTH)
        return row_cells(
            host,
            d,
            now,
            spark=spark,
            marked=key in self.marked,
            activity=self._activity.get(key),
            stale_s=self._stale_s(host, now),
        )

    def _format(self, key: str, row: Row, now: float) -> int:
        """Bring a row's text up to date with its sample; note (if shown) the columns
        whose text or look changed. Returns how many cells were rewritten."""
        row.dirty = False
        old, old_look = row.cells, row.look
        row.cells = self._cells(key, row.host, row.sample, now)
        row.look = (row.sample.state, self._stale_s(row.host, now) is not None)
        if not row.shown or (old == row.cells and old_look == row.look):
            return 0
        restyle = old_look != row.look  # every cell's style may differ
        n = 0
        first, last = len(self.columns), -1
        for i, c in enumerate(self.columns):
            idx = COLUMN_INDEX[c.key]
            if restyle or old[idx] != row.cells[idx]:
                first, last = min(first, i), i
                before, width = cell_len(old[idx]), cell_len(row.cells[idx])
                if before != width:
                    self._recount(c.key, before, width)
                n += 1
        if n:
            self._bump(row)
            was = self._written.get(key, (first, last))
            self._written[key] = (min(first, was[0]), max(last, was[1]))
        return n

    def _touch(self, key: str) -> None:
        row = self.rows.get(key)
        if row is not None:
            row.dirty = True

    def _bump(self, row: Row) -> None:
        self._versions += 1
        row.version = self._versions

    def _show(self, key: str, row: Row) -> None:
        """The filter keeps the row: it shows the text it had when last formatted (when
        that is out of date, `dirty`, it is formatted when next asked for)."""
        row.shown = True
        self._bump(row)
        self._count(row.cells, 1)

    def _hide(self, key: str, row: Row) -> None:
        row.shown = False
        self._count(row.cells, -1)
        self._written.pop(key, None)

    def _sort(self) -> None:
        rows = self.rows
        self._set_order(
            sorted(
                (k for k, r in rows.items() if r.shown),
                key=lambda k: (rows[k].sort_key, k),  # the host breaks the last tie
                reverse=self.sort_reverse,
            )
        )

    def _set_order(self, order: list[str]) -> None:
        self.order = order
        self._index = None
        self._moved = True

    def _set_columns(self, columns: tuple[Column, ...]) -> None:
        """Columns changed (a second host appeared): count the shown text again."""
        self.columns = columns
        self._counts.clear()
        self._content.clear()
        for row in self.rows.values():
            if row.shown:
                self._count(row.cells, 1)
        self.fit_dirty = True
        self._relaid = True

    def _count(self, cells: Cells, sign: int) -> None:
        """A row's texts come (1) or go (-1) from the shown rows."""
        for c in self.columns:
            width = cell_len(cells[COLUMN_INDEX[c.key]])
            if sign > 0:
                self._recount(c.key, None, width)
            else:
                self._recount(c.key, width, None)

    def _recount(self, column: str, old: int | None, new: int | None) -> None:
        """One shown cell's text went from `old` to `new` cells wide (None: no cell)."""
        counts = self._counts.setdefault(column, {})
        top = self._content.get(column, 0)
        if old is not None:
            left = counts[old] - 1
            if left:
                counts[old] = left
            else:
                del counts[old]
        if new is not None:
            counts[new] = counts.get(new, 0) + 1
        if new is not None and new > top:
            top = new
        elif old == top and old not in counts:
            top = max(counts, default=0)  # the widest text went: the column may shrink
        else:
            return
        self._content[column] = top
        self.fit_dirty = True
