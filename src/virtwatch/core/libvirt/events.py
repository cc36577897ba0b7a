"""libvirt domain events as typed `DomainEvent`s on the hub, decoded into words.

Pure decoders (`decode_*`) turn libvirt's event codes into an admin's words; the
`DomainEventStream` registers callbacks on every connection its source opens, hops
each event from libvirt's event thread to asyncio, and deregisters everything on close.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import libvirt

from virtwatch.core.errors import AppError, ErrorCode, from_libvirt
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.libvirt.connection import ConnectionSource
from virtwatch.core.libvirt.eventloop import LibvirtEventThread
from virtwatch.core.libvirt.uri import redact_uri
from virtwatch.core.records import DomainEvent, EventKind

log = logging.getLogger(__name__)

DEFAULT_CHECK_INTERVAL_S = 5.0
CHECK_TIMEOUT_S = 10.0  # the periodic round trip; longer and the connection is replaced
CLOSE_TIMEOUT_S = 5.0  # aclose() waits this long to deregister; then callbacks die with it

# --- pure decoding ----------------------------------------------------------------
# The tables mirror libvirt's virDomainEvent*Type / *DetailType enums (stable ABI);
# values newer than the installed binding are included so a newer daemon still reads well.

_LIFECYCLE: dict[int, tuple[str, dict[int, str]]] = {
    0: ("defined", {0: "added", 1: "updated", 2: "renamed", 3: "from snapshot"}),
    1: ("undefined", {0: "removed", 1: "renamed"}),
    2: (
        "started",
        {
            0: "booted",
            1: "migrated",
            2: "restored",
            3: "from snapshot",
            4: "woken up",
            5: "recreated",
        },
    ),
    3: (
        "suspended",
        {
            0: "by admin",
            1: "migrating",
            2: "I/O error",
            3: "watchdog",
            4: "restored",
            5: "from snapshot",
            6: "API error",
            7: "post-copy migration",
            8: "post-copy failed",
        },
    ),
    4: (
        "resumed",
        {
            0: "unpaused",
            1: "migrated",
            2: "from snapshot",
            3: "post-copy migration",
            4: "post-copy failed",
        },
    ),
    5: (
        "stopped",
        {
            0: "shut down",
            1: "destroyed",
            2: "crashed",
            3: "migrated",
            4: "saved",
            5: "emulator failed",
            6: "from snapshot",
            7: "recreated",
        },
    ),
    6: ("shutdown", {0: "finished", 1: "requested by the guest", 2: "requested by the host"}),
    7: ("PM-suspended", {0: "to memory", 1: "to disk"}),
    8: ("crashed", {0: "panicked", 1: "crash kernel loaded"}),
}

_WATCHDOG: dict[int, str] = {
    0: "no action",
    1: "guest paused",
    2: "guest reset",
    3: "guest powered off",
    4: "guest shut down",
    5: "debug only",
    6: "NMI injected",
}

_IO_ERROR_ACTION: dict[int, str] = {0: "no action", 1: "guest paused", 2: "reported to the guest"}

_IO_ERROR_REASON: dict[str, str] = {
    "enospc": "no space left on device",
    "eio": "input/output error",
    "eperm": "operation not permitted",
}

_AGENT_STATE: dict[int, str] = {1: "connected", 2: "disconnected"}
_AGENT_REASON: dict[int, str] = {0: "", 1: "domain started", 2: "channel event"}

_METADATA: dict[int, str] = {0: "description", 1: "title", 2: "element"}


def decode_lifecycle(event: int, detail: int) -> str:
    """(event, detail) -> "stopped: destroyed". Unknown values stay visible as numbers."""
    known = _LIFECYCLE.get(event)
    if known is None:
        return f"lifecycle event {event} (detail {detail})"
    name, details = known
    words = details.get(detail)
    return f"{name}: {words}" if words is not None else f"{name}: detail {detail}"


def lifecycle_kind_name(event: int) -> str:
    """The event's own name ("stopped"), or "event N" when unknown."""
    known = _LIFECYCLE.get(event)
    return known[0] if known else f"event {event}"


def decode_watchdog(action: int) -> str:
    return f"watchdog fired: {_WATCHDOG.get(action, f'action {action}')}"


def decode_io_error_reason(reason: str) -> str:
    """QEMU's reason ("enospc", or a message) in words; empty when QEMU gave none."""
    text = reason.strip()
    return _IO_ERROR_REASON.get(text.lower(), text)


def decode_io_error(action: int, dev_alias: str, src_path: str, reason: str | None) -> str:
    """ "I/O error on vda (/var/lib/x.qcow2): no space left on device; guest paused"."""
    where = dev_alias or "a disk"
    if src_path:
        where = f"{where} ({src_path})"
    why = decode_io_error_reason(reason) if reason is not None else ""
    what = _IO_ERROR_ACTION.get(action, f"action {action}")
    return f"I/O error on {where}: {why}; {what}" if why else f"I/O error on {where}; {what}"


def decode_agent(state: int, reason: int) -> str:
    st = _AGENT_STATE.get(state, f"state {state}")
    why = _AGENT_REASON.get(reason, f"reason {reason}")
    return f"guest agent {st} ({why})" if why else f"guest agent {st}"


def decode_metadata(mtype: int, nsuri: str | None) -> str:
    what = _METADATA.get(mtype, f"type {mtype}")
    if mtype == 2 and nsuri:
        what = f"{what} {nsuri}"
    return f"metadata changed: {what}"


def decode_device(added: bool, dev_alias: str) -> str:
    return f"device {'added' if added else 'removed'}: {dev_alias or '(no alias)'}"


REBOOT_SUMMARY = "rebooted (guest reset)"


def lifecycle_detail(event: int, detail: int) -> dict[str, str]:
    return {"event": str(event), "detail": str(detail), "name": lifecycle_kind_name(event)}


# --- the stream -------------------------------------------------------------------


class EventSource(ConnectionSource, Protocol):
    """A connection source that tells us about every (re)opened connection."""

    def add_open_listener(self, fn: Callable[[libvirt.virConnect], None]) -> None: ...


class StreamState(enum.StrEnum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(slots=True)
class _Registration:
    """Callbacks registered on one connection.

    A connection closed by someone else stays alive inside libvirt while callbacks hold
    it and keeps delivering events, but can no longer be told to deregister them (and
    touching it outside its source's guarded calls may crash). `conn` is kept only to
    recognise the connection inside such a call. Each registration carries a generation:
    events from any but the newest are dropped.
    """

    conn: libvirt.virConnect
    generation: int
    ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class StreamStats:
    received: int = 0  # events delivered on the hub
    stale_dropped: int = 0  # events from a retired connection, dropped (no duplicates)
    registrations: int = 0  # callback sets registered (1 + reconnects)
    unsupported: set[int] = field(default_factory=set)  # event ids the driver refused


class DomainEventStream:
    """`async with DomainEventStream(source, hub.publish, host=...)` keeps libvirt domain
    callbacks registered on the source's live connection until the block exits.

    Callbacks are (re)registered in the source's open listener, so every reconnect gets
    them again; a periodic cheap call on a borrowed connection lets a source that only
    reopens on demand notice a dead connection. Callbacks live on one connection at a
    time: use a source dedicated to events (one connection), not the shared pool.
    """

    def __init__(
        self,
        source: EventSource,
        publish: Callable[[object], None],
        *,
        host: str,
        on_event: Callable[[DomainEvent], None] | None = None,
        check_interval_s: float = DEFAULT_CHECK_INTERVAL_S,
    ) -> None:
        self._source = source
        self._publish = publish
        self.host = host
        self._on_event = on_event
        self._check_interval_s = check_interval_s
        self._state = StreamState.UNOPENED
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # registrations change from worker threads
        self._regs: list[_Registration] = []
        self._generation = 0
        self._watch: asyncio.Task[None] | None = None
        self._healthy = True
        self.stats = StreamStats()

    def __repr__(self) -> str:
        return f"<DomainEventStream {redact_uri(self._source.uri)} {self._state}>"

    @property
    def state(self) -> StreamState:
        return self._state

    @property
    def registered(self) -> int:
        """How many libvirt callbacks this stream holds right now (0 once closed)."""
        return sum(len(r.ids) for r in self._regs)  # the list is replaced, never mutated

    # --- lifecycle ------------------------------------------------------------

    async def open(self) -> DomainEventStream:
        if self._state is not StreamState.UNOPENED:
            raise AppError(
                ErrorCode.INTERNAL_ERROR,
                f"event stream for {self.host} is {self._state}, cannot open it again",
                "this is a bug in virtwatch: build a new DomainEventStream",
            )
        LibvirtEventThread.ensure_running()
        self._loop = asyncio.get_running_loop()
        self._state = StreamState.OPEN
        self._source.add_open_listener(self._on_open)
        add_close_listener = getattr(self._source, "add_close_listener", None)
        if add_close_listener is not None:  # a pool's dedicated connection tells us first
            add_close_listener(self._on_close)
        await self._check()  # registers on an already-open connection, or opens one
        self._watch = asyncio.create_task(self._watch_loop(), name=f"events:{self.host}")
        return self

    async def __aenter__(self) -> DomainEventStream:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop delivering and deregister every callback. Safe to call twice."""
        if self._state in (StreamState.CLOSING, StreamState.CLOSED):
            return
        self._state = StreamState.CLOSING
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S), self._source.connection() as b:
                await b.call(self._deregister_on, what="deregistering event callbacks")
        except (AppError, libvirt.libvirtError, TimeoutError):
            pass  # callbacks on a connection we cannot reach die with it
        with self._lock:
            self._regs = []
        self._state = StreamState.CLOSED

    # --- registration (worker threads) ----------------------------------------

    def _callbacks(self) -> list[tuple[int, Callable[..., Any]]]:
        return [
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._cb_lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._cb_reboot),
            (libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON, self._cb_io_error_reason),
            (libvirt.VIR_DOMAIN_EVENT_ID_WATCHDOG, self._cb_watchdog),
            (libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, self._cb_agent),
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, self._cb_device_added),
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._cb_device_removed),
            (libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, self._cb_metadata),
        ]

    def _on_open(self, conn: libvirt.virConnect) -> None:
        """The source's open listener: never raises, or the source could not open."""
        try:
            self._register(conn)
        except libvirt.libvirtError as err:
            error = from_libvirt(err, uri=self._source.uri, what="registering event callbacks")
            self._report_threadsafe(error)

    def _on_close(self, conn: libvirt.virConnect) -> None:
        """The source is about to close `conn` on purpose: leave nothing registered on it."""
        with self._lock:
            mine = [r for r in self._regs if r.conn is conn]
            self._regs = [r for r in self._regs if r.conn is not conn]
            for reg in mine:
                self._deregister(reg)

    def _has(self, conn: libvirt.virConnect) -> bool:
        return any(r.conn is conn for r in self._regs)

    def _register(self, conn: libvirt.virConnect) -> None:
        with self._lock:
            if self._state is not StreamState.OPEN or any(r.conn is conn for r in self._regs):
                return
            self._generation += 1
            reg = _Registration(conn, self._generation)
            try:
                for event_id, cb in self._callbacks():
                    self._register_one(reg, event_id, cb)
            except libvirt.libvirtError:
                self._deregister(reg)
                raise
            # older registrations live on connections we are not inside a call on: never
            # touched again (their events are dropped by generation, they die with them)
            self._regs = [reg]
            self.stats.registrations += 1

    def _register_one(self, reg: _Registration, event_id: int, cb: Callable[..., Any]) -> None:
        try:
            reg.ids.append(reg.conn.domainEventRegisterAny(None, event_id, cb, reg.generation))
        except libvirt.libvirtError as err:
            if err.get_error_code() not in (
                libvirt.VIR_ERR_NO_SUPPORT,
                libvirt.VIR_ERR_INVALID_ARG,
                libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
            ):
                raise
            if event_id == libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON:
                # an old daemon without the reason variant: the plain one carries the rest
                self._register_one(reg, libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR, self._cb_io_error)
                return
            self.stats.unsupported.add(event_id)

    def _deregister(self, reg: _Registration) -> None:
        """Best effort: on a closed or dead connection libvirt refuses (an error, never a
        crash), and the generation check keeps whatever it still delivers out."""
        for cid in reg.ids:
            with contextlib.suppress(libvirt.libvirtError):
                reg.conn.domainEventDeregisterAny(cid)
        reg.ids.clear()

    def _deregister_on(self, conn: libvirt.virConnect) -> None:
        """In a call on `conn`: deregister what we hold on it; forget the rest."""
        with self._lock:
            regs, self._regs = self._regs, []
            for reg in regs:
                if reg.conn is conn:
                    self._deregister(reg)

    def _check_blocking(self, conn: libvirt.virConnect) -> None:
        if not self._has(conn):
            self._register(conn)
        conn.getLibVersion()

    # --- health ------------------------------------------------------------------

    async def _check(self) -> None:
        """Borrow the connection and make one round trip: registers on a connection we
        have not seen, and lets the source find out that its connection died."""
        try:
            async with self._source.connection() as b:
                await b.call(
                    self._check_blocking, timeout_s=CHECK_TIMEOUT_S, what="event connection check"
                )
        except AppError as err:
            self._unhealthy(err)
        except libvirt.libvirtError as err:
            self._unhealthy(from_libvirt(err, uri=self._source.uri, what="event connection"))
        else:
            self._healthy = True

    def _unhealthy(self, err: AppError) -> None:
        if self._healthy:  # once per outage: the collector reports the host's state too
            self._publish(ErrorReport.of(err, host=self.host))
        self._healthy = False

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self._check_interval_s)
            await self._check()

    # --- libvirt's event thread -------------------------------------------------

    def _report_threadsafe(self, err: AppError) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
                loop.call_soon_threadsafe(self._publish, ErrorReport.of(err, host=self.host))

    def _emit(
        self,
        generation: int,
        dom: libvirt.virDomain,
        kind: EventKind,
        summary: str,
        detail: Mapping[str, str],
    ) -> None:
        if generation != self._generation:
            self.stats.stale_dropped += 1  # a retired connection still talking
            return
        if self._state is not StreamState.OPEN or self._loop is None:
            return
        try:
            # local calls: the domain object carries its name and UUID
            event = DomainEvent(
                self.host, dom.UUIDString(), dom.name(), kind, summary, time.time(), detail
            )
        except libvirt.libvirtError:  # pragma: no cover - a libvirt bug
            log.exception("cannot read an event's domain")
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            self._loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: DomainEvent) -> None:
        if self._state is not StreamState.OPEN:
            return
        self.stats.received += 1
        self._publish(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # a listener's bug must not stop the next event
                log.exception("on_event failed for %s", event.summary)

    def _cb_lifecycle(
        self, _c: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int, gen: int
    ) -> None:
        self._emit(
            gen,
            dom,
            EventKind.LIFECYCLE,
            decode_lifecycle(event, detail),
            lifecycle_detail(event, detail),
        )

    def _cb_reboot(self, _c: libvirt.virConnect, dom: libvirt.virDomain, gen: int) -> None:
        self._emit(gen, dom, EventKind.REBOOT, REBOOT_SUMMARY, {})

    def _cb_io_error_reason(
        self,
        _c: libvirt.virConnect,
        dom: libvirt.virDomain,
        src_path: str,
        dev_alias: str,
        action: int,
        reason: str,
        gen: int,
    ) -> None:
        detail = {
            "src_path": src_path or "",
            "dev_alias": dev_alias or "",
            "action": str(action),
            "reason": reason or "",
        }
        summary = decode_io_error(action, dev_alias or "", src_path or "", reason or "")
        self._emit(gen, dom, EventKind.IO_ERROR, summary, detail)

    def _cb_io_error(
        self,
        _c: libvirt.virConnect,
        dom: libvirt.virDomain,
        src_path: str,
        dev_alias: str,
        action: int,
        gen: int,
    ) -> None:
        detail = {"src_path": src_path or "", "dev_alias": dev_alias or "", "action": str(action)}
        summary = decode_io_error(action, dev_alias or "", src_path or "", None)
        self._emit(gen, dom, EventKind.IO_ERROR, summary, detail)

    def _cb_watchdog(
        self, _c: libvirt.virConnect, dom: libvirt.virDomain, action: int, gen: int
    ) -> None:
        self._emit(gen, dom, EventKind.WATCHDOG, decode_watchdog(action), {"action": str(action)})

    def _cb_agent(
        self, _c: libvirt.virConnect, dom: libvirt.virDomain, state: int, reason: int, gen: int
    ) -> None:
        detail = {"state": str(state), "reason": str(reason)}
        self._emit(gen, dom, EventKind.AGENT_LIFECYCLE, decode_agent(state, reason), detail)

    def _cb_device_added(
        self, _c: libvirt.virConnect, dom: libvirt.virDomain, alias: str, gen: int
    ) -> None:
        summary = decode_device(True, alias or "")
        self._emit(gen, dom, EventKind.DEVICE_ADDED, summary, {"dev_alias": alias or ""})

    def _cb_device_removed(
        self, _c: libvirt.virConnect, dom: libvirt.virDomain, alias: str, gen: int
    ) -> None:
        summary = decode_device(False, alias or "")
        self._emit(gen, dom, EventKind.DEVICE_REMOVED, summary, {"dev_alias": alias or ""})

    def _cb_metadata(
        self, _c: libvirt.virConnect, dom: libvirt.virDomain, mtype: int, nsuri: str, gen: int
    ) -> None:
        detail = {"type": str(mtype), "nsuri": nsuri or ""}
        self._emit(gen, dom, EventKind.METADATA_CHANGE, decode_metadata(mtype, nsuri), detail)
