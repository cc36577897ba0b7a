"""Which process writes a host's history: the running store writers' claims on hosts.

A leased writer claims every host it has rows for (a `writer_claim` row per host and
holder, its heartbeat renewed every few seconds inside the writer's own flush cycle).
Of a host's live claims (heartbeat younger than TTL_S) the best leads: a recorder beats
a dashboard, then the earliest started, then the holder id. Only the leader writes the
host's samples, events, connection states and health; the others leave them to it. A
better newcomer waits until the writer in place has stepped down (its `writing` flag,
cleared at its own next renew), and a writer that takes a host over writes only what
was taken from then on: a handover never writes the same moments twice.
A claim of a process that is gone from this machine (same kernel boot and pid namespace,
its pid not running: a crashed recorder that systemd restarts) counts as dead at once.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import platform
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil
from sqlalchemy import Connection, delete, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from virtwatch.storage.models import WriterClaim
from virtwatch.storage.store import MAX_ROWS_PER_STATEMENT, Store

TTL_S = 30.0  # a claim whose heartbeat is older is a dead process's (SIGKILL, crash)
RENEW_EVERY_S = 5.0  # well inside the TTL, even with a flush blocked for a while
FORGET_AFTER_S = 600.0  # dead claims are deleted by the next renew of anyone
_PG_LEASE_LOCK = 0x76_77_6C_73  # "vwls": serialises renews, so two never decide blind


class WriterRole(enum.StrEnum):
    RECORDER = "recorder"  # `virtwatch record`: wins over any dashboard
    DASHBOARD = "dashboard"


_RANK = {WriterRole.RECORDER.value: 0, WriterRole.DASHBOARD.value: 1}
_PROGRAM = {
    WriterRole.RECORDER.value: "virtwatch record",
    WriterRole.DASHBOARD.value: "the virtwatch dashboard",
}


def process_namespace() -> str:
    """This kernel boot and pid namespace ('' where unknown): within it, a pid that is
    not running is a process that is gone."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{pid_ns}"[:64]


@dataclass(frozen=True, slots=True)
class Holder:
    """One writer of one process run."""

    id: str
    role: WriterRole
    pid: int
    nodename: str
    started_ms: int
    process_ns: str = ""  # see process_namespace()

    @classmethod
    def of_this_process(cls, role: WriterRole, started_ms: int) -> Holder:
        """`{nodename}:{pid}:{started_ms}:{random}`: unique per run (and per writer)."""
        node = platform.node() or "localhost"
        pid = os.getpid()
        holder = f"{node}:{pid}:{started_ms}:{secrets.token_hex(3)}"[-255:]
        return cls(holder, role, pid, node[:255], started_ms, process_namespace())


@dataclass(frozen=True, slots=True)
class Claim:
    """A row of `writer_claim`: `holder` claims `host`."""

    host: str
    holder: str
    role: str  # a WriterRole's value (an unknown one, from a newer virtwatch, ranks last)
    pid: int
    nodename: str
    started_ms: int
    heartbeat_ms: int
    writing: bool  # writes the host until its next renew
    process_ns: str = ""

    def live(self, now_ms: int) -> bool:
        return now_ms - self.heartbeat_ms < TTL_S * 1000

    @property
    def rank(self) -> tuple[int, int, str]:
        """Lower is better: recorder first, then the earliest started, then the id."""
        return (_RANK.get(self.role, len(_RANK)), self.started_ms, self.holder)

    def describe(self) -> str:
        """'virtwatch record (pid 1234 on node7)'."""
        program = _PROGRAM.get(self.role, f"virtwatch ({self.role})")
        return f"{program} (pid {self.pid} on {self.nodename})"


def decide(mine: Claim, claims: Iterable[Claim], now_ms: int) -> tuple[bool, Claim | None]:
    """Whether `mine` leads its host given the host's `claims` (its own row among them or
    not); when it does not, the claim of the process that writes the host now (the one
    flagged writing), or of the one that will (the best live claim)."""
    live = [c for c in claims if c.holder != mine.holder and c.live(now_ms)]
    writing = min((c for c in live if c.writing), key=_rank_of, default=None)
    best = min(live, key=_rank_of, default=None)
    if writing is None and (best is None or mine.rank < best.rank):
        return True, None
    return False, writing or best


def _rank_of(claim: Claim) -> tuple[int, int, str]:
    return claim.rank


_COLUMNS = (
    WriterClaim.host,
    WriterClaim.holder,
    WriterClaim.role,
    WriterClaim.pid,
    WriterClaim.nodename,
    WriterClaim.started_ms,
    WriterClaim.heartbeat_ms,
    WriterClaim.writing,
    WriterClaim.process_ns,
)


def _claims(
    result: Iterable[tuple[str, str, str, int, str, int, int, bool, str]],
) -> list[Claim]:
    return [
        Claim(h, holder, role, int(pid), node, int(started), int(beat), bool(writing), ns)
        for h, holder, role, pid, node, started, beat, writing, ns in result
    ]


class Lease:
    """A writer's claims: `renew` (from the writer's flush cycle) claims the hosts it has
    rows for and decides which it leads; `release` (when it closes) hands them over."""

    def __init__(
        self, store: Store, holder: Holder, *, running: Callable[[int], bool] = psutil.pid_exists
    ) -> None:
        self.store = store
        self.holder = holder
        self._running = running
        self.claimed: frozenset[str] = frozenset()  # as of the last renew
        self.led: frozenset[str] = frozenset()
        self.skipped: frozenset[str] = frozenset()  # claimed, not led: written elsewhere
        # hosts it only has records of (no recent sample: it cannot reach them, say):
        # never claimed; their records are written when no live claim writes the host
        self.watched: frozenset[str] = frozenset()
        self.unclaimed: frozenset[str] = frozenset()  # watched, and nobody writes them
        self.writers: dict[str, Claim] = {}  # host not led -> who writes it (or will)
        # hosts taken over from another writer at the last renew -> when (epoch ms): what
        # was taken before is the other's (it wrote up to its own renew, which came first)
        self.cuts: dict[str, int] = {}
        self.renewed_at: float | None = None
        self.renewals = 0

    def due(self, now: float) -> bool:
        return self.renewed_at is None or now - self.renewed_at >= RENEW_EVERY_S

    def _mine(self, host: str, now_ms: int, writing: bool = False) -> Claim:
        h = self.holder
        return Claim(
            host, h.id, h.role.value, h.pid, h.nodename, h.started_ms, now_ms, writing, h.process_ns
        )

    def gone(self, claim: Claim) -> bool:
        """Another holder's claim whose process is certainly gone: on this machine (same
        boot and pid namespace) and its pid not running. (A reused pid keeps the claim
        until it expires, as a claim from another machine does.)"""
        return (
            claim.holder != self.holder.id
            and bool(claim.process_ns)
            and claim.process_ns == self.holder.process_ns
            and not self._running(claim.pid)
        )

    async def renew(self, hosts: Iterable[str], now: float, watch: Iterable[str] = ()) -> None:
        """One transaction: forget long-dead claims, read the claims on `hosts` (those it
        has recent samples of) and on `watch` (those it only has records of), decide,
        write this holder's claims on `hosts` with the decisions, and delete its claims on
        hosts it no longer has samples of (another process may have them). The decisions
        count from the commit on (a failure leaves the previous ones, and the renew still
        due)."""
        wanted = frozenset(hosts)
        watched = frozenset(watch) - wanted
        if not wanted and not watched and not self.claimed:
            self.renewed_at = now
            return
        now_ms = round(now * 1000)
        led: set[str] = set()
        unclaimed: set[str] = set()
        writers: dict[str, Claim] = {}
        async with self.store.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LEASE_LOCK})
            forget = now_ms - round(FORGET_AFTER_S * 1000)
            await conn.execute(delete(WriterClaim).where(WriterClaim.heartbeat_ms < forget))
            if dropped := self.claimed - wanted:  # no recent sample of them any more
                await conn.execute(
                    delete(WriterClaim).where(
                        WriterClaim.holder == self.holder.id, WriterClaim.host.in_(dropped)
                    )
                )
            by_host: dict[str, list[Claim]] = defaultdict(list)
            result = await conn.execute(
                select(*_COLUMNS).where(WriterClaim.host.in_(wanted | watched))
            )
            gone: set[str] = set()
            for claim in _claims(result):
                if self.gone(claim):
                    gone.add(claim.holder)
                else:
                    by_host[claim.host].append(claim)
            if gone:
                await conn.execute(delete(WriterClaim).where(WriterClaim.holder.in_(gone)))
            params = []
            for host in sorted(wanted):
                leads, writer = decide(self._mine(host, now_ms), by_host[host], now_ms)
                if leads:
                    led.add(host)
                elif writer is not None:
                    writers[host] = writer
                params.append(dataclasses.asdict(self._mine(host, now_ms, leads)))
            for host in watched:
                _, writer = decide(self._mine(host, now_ms), by_host[host], now_ms)
                if writer is None:
                    unclaimed.add(host)
                else:
                    writers[host] = writer
            ins = self.store.insert(WriterClaim)
            upsert = ins.on_conflict_do_update(
                index_elements=[WriterClaim.host, WriterClaim.holder],
                set_={"heartbeat_ms": ins.excluded.heartbeat_ms, "writing": ins.excluded.writing},
            )
            for start in range(0, len(params), MAX_ROWS_PER_STATEMENT):
                await conn.execute(upsert, params[start : start + MAX_ROWS_PER_STATEMENT])
        self.cuts = {host: now_ms for host in led if host in self.skipped}
        self.claimed = wanted
        self.led = frozenset(led)
        self.skipped = wanted - self.led
        self.watched = watched
        self.unclaimed = frozenset(unclaimed)
        self.writers = writers
        self.renewed_at = now
        self.renewals += 1

    async def release(self) -> None:
        """Delete this holder's claims: another process takes its hosts over at its next
        renew (idempotent; a holder that never claimed touches nothing)."""
        if not self.claimed:
            return
        async with self.store.engine.begin() as conn:
            await conn.execute(delete(WriterClaim).where(WriterClaim.holder == self.holder.id))
        self.claimed = self.led = self.skipped = frozenset()
        self.watched = self.unclaimed = frozenset()
        self.writers = {}
        self.cuts = {}


def _has_claims_table(conn: Connection) -> bool:
    return inspect(conn).has_table(WriterClaim.__tablename__)


async def live_claims(conn: AsyncConnection, now_ms: int) -> list[Claim]:
    """Every live claim, by host then rank (none in a database older than the table)."""
    if not await conn.run_sync(_has_claims_table):
        return []
    result = await conn.execute(
        select(*_COLUMNS).where(WriterClaim.heartbeat_ms > now_ms - round(TTL_S * 1000))
    )
    return sorted(_claims(result), key=lambda c: (c.host, c.rank))
