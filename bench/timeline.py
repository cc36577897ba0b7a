"""The incident timeline and export over 30 days of history for 100 VMs.

    .venv/bin/python -m bench.timeline [--vms 100] [--days 30] [--db PATH] [--runs 5]

History (made once; `--db` keeps it for the next run): the metric catalogue as the
collector fills it (10 metrics per VM, 7 for the host), minute aggregates for every
series over the whole span (bulk SQL, as storage_history.py does), and the records a
busy host leaves, written through the store's normal write path (`Store.write`):
lifecycle events, spikes and config changes, error incidents, health results (7 days:
their retention) and transitions, admin actions, connection changes.

Measured for the last full day of that history, medians of --runs:
- the spike watch: its start (each series' 24 h of minute means read once), and then
  one minute of every series with all baselines refreshed (the worst steady minute);
- the timeline query (`TimelineQueries.timeline`: every source, hints, ordering),
  target under 200 ms; reference: bare sqlite3 SELECTs of the same rows;
- the export (`write_window`, as the screen's `e` does it: the document streamed to a
  private file as the database writes the series), target under 2 s;
  references measured right after each run: bare sqlite3 SELECTs of the same rows
  (with and without a `json.dump` of the tuples to a file), and an aggregate scan that
  reads every value of those rows and builds nothing (the database's own floor).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from virtwatch.core.errors import AppError, ErrorCode, Severity
from virtwatch.core.incidents import ErrorReport
from virtwatch.core.records import (
    AuditRecord,
    ConnectionState,
    DomainEvent,
    EventKind,
    HealthAlert,
    HealthResult,
    HealthState,
    HostConnection,
    Outcome,
)
from virtwatch.core.triage.spike_watch import SpikeWatch
from virtwatch.core.triage.spikes import SpikeRules
from virtwatch.core.triage.when import Window
from virtwatch.storage.engine import db_url
from virtwatch.storage.export import write_window
from virtwatch.storage.store import Store
from virtwatch.storage.timeline_queries import StoreRollupReader, TimelineQueries

VM_METRICS = (
    "cpu_pct",
    "vcpu_delay_pct",
    "mem_used_kib",
    "mem_alloc_kib",
    "disk_rd_bps",
    "disk_wr_bps",
    "disk_rd_iops",
    "disk_wr_iops",
    "net_rx_bps",
    "net_tx_bps",
)
HOST_METRICS = (
    "host.cpu_pct",
    "host.mem_used_kib",
    "host.swap_used_kib",
    "host.disk_read_bps",
    "host.disk_write_bps",
    "host.net_rx_bps",
    "host.net_tx_bps",
)
HOST = "hv1"
DAY = 86_400
MIN_MS = 60_000
DAY_MS = DAY * 1000
MARKER = "bench.timeline/2"  # /2: values in each unit's range
SERIES = (
    "WITH RECURSIVE t(ts) AS (SELECT ? UNION ALL SELECT ts + {step} FROM t WHERE ts + {step} < ?)"
)
VALUE = (  # each unit in its usual range: percentages and most IOPS below 100 (decimals)
    "CASE WHEN m.name LIKE '%kib' THEN 1000000 + abs(random() % 3000000) "
    "WHEN m.name LIKE '%pct' THEN abs(random() % 10000) / 100.0 "
    "WHEN m.name LIKE '%iops' THEN abs(random() % 20000) / 100.0 "
    "ELSE abs(random() % 100000000) / 10.0 END"
)
LIFECYCLE = (
    ("started: booted", "2"),
    ("suspended: by admin", "3"),
    ("resumed: unpaused", "4"),
    ("stopped: shut down", "5"),
    ("stopped: destroyed", "5"),
    ("suspended: I/O error", "3"),
    ("stopped: crashed", "5"),
)


def vm_uuid(v: int) -> str:
    return f"00000000-0000-4000-8000-{v:012d}"


def generate_minutes(path: Path, vms: int, start_ms: int, end_ms: int) -> float:
    t0 = time.perf_counter()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")  # generation only; the store's own writes use FULL
    con.execute("BEGIN")
    rows = [(HOST, vm_uuid(v), f"vm-{v:03d}", m) for v in range(vms) for m in VM_METRICS]
    rows += [(HOST, "", "", m) for m in HOST_METRICS]
    con.executemany("INSERT INTO metric (host, vm_uuid, vm_name, name) VALUES (?, ?, ?, ?)", rows)
    con.execute("COMMIT")
    for lo in range(start_ms, end_ms, DAY_MS):  # one transaction per day of minutes
        con.execute("BEGIN")
        con.execute(
            f"{SERIES.format(step=MIN_MS)}, "
            f"v AS (SELECT m.id AS id, t.ts AS ts, {VALUE} AS x FROM metric AS m CROSS JOIN t) "
            "INSERT INTO metric_minute (metric_id, ts_ms, count, sum, min, max, p95) "
            "SELECT id, ts, 30, x * 30, x * 0.5, x * 1.5, x * 1.4 FROM v",
            (lo, min(end_ms, lo + DAY_MS)),
        )
        con.execute("COMMIT")
    con.execute(
        "INSERT INTO rollup_state (tier, host, watermark_ms, updated_at_ms) VALUES (?, ?, ?, ?)",
        ("minute", HOST, end_ms, end_ms),
    )
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return time.perf_counter() - t0


def day_of_records(rng: random.Random, vms: int, day0: float, health: bool) -> list[Any]:
    """What one busy day leaves: ~8 lifecycle events per VM, spikes, config changes,
    ~60 error incidents, ~40 transitions, ~100 admin actions, results every 30 s."""
    out: list[Any] = []
    for v in range(vms):
        uuid, name = vm_uuid(v), f"vm-{v:03d}"
        for _ in range(8):
            summary, event = rng.choice(LIFECYCLE)
            at = day0 + rng.uniform(0, DAY)
            out.append(
                DomainEvent(HOST, uuid, name, EventKind.LIFECYCLE, summary, at, {"event": event})
            )
        if rng.random() < 0.5:
            at = day0 + rng.uniform(0, DAY - 3600)
            for phase, t in (("start", at), ("end", at + 600)):
                out.append(
                    DomainEvent(
                        HOST, uuid, name, EventKind.SPIKE, f"CPU spike ({phase})", t,
                        {"metric": "cpu_pct", "phase": phase, "start": str(int(at))},
                    )
                )  # fmt: skip
        if rng.random() < 0.05:
            out.append(
                DomainEvent(
                    HOST, uuid, name, EventKind.CONFIG_CHANGE,
                    "definition changed: memory 2 GiB → 4 GiB", day0 + rng.uniform(0, DAY),
                    {"memory_kib": "2097152→4194304"},
                )
            )  # fmt: skip
    for i in range(60):
        at = day0 + rng.uniform(0, DAY)
        err = AppError(
            rng.choice(list(ErrorCode)),
            f"something failed on vm-{i % vms:03d} (case {rng.randrange(10**6)})",
            "a hint",
            rng.choice(list(Severity)),
            {"uri": "qemu+ssh://admin@hv1/system"},
        )
        out.append(ErrorReport(err, HOST, f"vm-{i % vms:03d}", at + 300, f"fp-{day0}-{i}", 5, at))
    checks = [("host.cpu", HOST), ("host.memory", HOST), ("host.swap", HOST), ("host.load", HOST)]
    checks += [("host.disk", m) for m in ("/", "/var", "/var/lib/libvirt", "/srv", "/home")]
    checks += [("libvirt.reachable", HOST)]
    for _ in range(40):
        check, subject = rng.choice(checks)
        prev, cur = rng.sample([HealthState.OK, HealthState.WARN, HealthState.CRIT], 2)
        out.append(
            HealthAlert(check, subject, prev, cur, "value", day0 + rng.uniform(0, DAY), HOST)
        )
    if health:
        for step in range(0, DAY, 30):
            for check, subject in checks:
                out.append(
                    HealthResult(
                        check, subject, HealthState.OK, HealthState.OK, 42.0, "%", 80.0, 95.0,
                        "42 %", day0 + step, HOST,
                    )
                )  # fmt: skip
    for _ in range(100):
        v = rng.randrange(vms)
        out.append(
            AuditRecord(
                HOST, vm_uuid(v), f"vm-{v:03d}", rng.choice(["start", "pause", "force_off"]),
                "alice", "192.0.2.7", rng.choice(list(Outcome)), day0 + rng.uniform(0, DAY),
                1.5, "done",
            )
        )  # fmt: skip
    out.append(
        HostConnection(HOST, "qemu:///system", ConnectionState.CONNECTED, day0 + 5, day0 + 5)
    )
    return out


async def generate(path: Path, vms: int, days: int, now: float) -> dict[str, float]:
    took: dict[str, float] = {}
    end = now - now % 60
    start = end - days * DAY
    url = db_url(path)
    async with Store(url):
        pass  # the schema at head
    took["minutes"] = generate_minutes(path, vms, int(start * 1000), int(end * 1000))
    rng = random.Random(7)
    t0 = time.perf_counter()
    async with Store(url) as store:
        for d in range(days):
            day0 = start + d * DAY
            records = day_of_records(rng, vms, day0, health=d >= days - 7)
            for i in range(0, len(records), 20_000):  # the writer's flush size
                await store.write([], records[i : i + 20_000])
    took["records"] = time.perf_counter() - t0
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE bench_marker (name TEXT, vms INT, days INT, until REAL)")
    con.execute("INSERT INTO bench_marker VALUES (?, ?, ?, ?)", (MARKER, vms, days, end))
    con.commit()
    con.execute("ANALYZE")
    con.close()
    return took


def marker(path: Path) -> tuple[int, int, float] | None:
    if not path.exists():
        return None
    con = sqlite3.connect(path)
    try:
        row = con.execute("SELECT vms, days, until FROM bench_marker WHERE name = ?", (MARKER,))
        found = row.fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()
    return None if found is None else (int(found[0]), int(found[1]), float(found[2]))


async def median_s(runs: int, fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    times = []
    result: Any = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


BARE_TIMELINE = (
    ("SELECT * FROM domain_event WHERE at_ms >= ? AND at_ms < ?", 2),
    ("SELECT * FROM audit WHERE started_at_ms >= ? AND started_at_ms < ?", 2),
    ("SELECT * FROM health_alert WHERE at_ms >= ? AND at_ms < ?", 2),
    ("SELECT * FROM host_connection WHERE at_ms >= ? AND at_ms < ?", 2),
    ("SELECT * FROM error_log WHERE last_at_ms >= ? AND first_at_ms < ?", 2),
)
MINUTE_ROWS = (
    "FROM metric_minute WHERE metric_id IN (SELECT id FROM metric WHERE host = 'hv1') "
    "AND ts_ms >= ? AND ts_ms < ?"
)
BARE_EXPORT = (
    *BARE_TIMELINE,
    ("SELECT * FROM health_result WHERE at_ms >= ? AND at_ms < ?", 2),
    (f"SELECT metric_id, ts_ms, count, sum, min, max, p95 {MINUTE_ROWS}", 2),
)
# every value of every row read, nothing built: the database's own floor for this window
SCAN_EXPORT = (
    *BARE_EXPORT[:-1],
    (
        "SELECT metric_id, count(*), sum(count), sum(sum), sum(min), sum(max), sum(p95) "
        f"{MINUTE_ROWS} GROUP BY metric_id",
        2,
    ),
)


def bare(path: Path, runs: int, queries: Any, lo: int, hi: int, out: Path | None) -> float:
    con = sqlite3.connect(path)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        rows = [con.execute(sql, (lo, hi)).fetchall() for sql, _n in queries]
        if out is not None:
            out.write_text(json.dumps(rows, separators=(",", ":")))
        times.append(time.perf_counter() - t0)
    con.close()
    return statistics.median(times)


def cpu_time() -> float:
    """CPU seconds this process used so far (every thread: SQLite works in aiosqlite's)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ratios(mine: list[float], ref: list[float]) -> str:
    """Median of the per-run ratios (each pair measured back to back)."""
    return f"{statistics.median(a / b for a, b in zip(mine, ref, strict=True)):.2f}x"


async def main(vms: int, days: int, db: Path | None, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = db or Path(tmp) / "timeline.db"
        made = marker(path)
        if made is None or made[:2] != (vms, days):
            if path.exists():
                raise SystemExit(f"{path} exists and is not this bench's history; give a new path")
            print(f"making {days} days of history for {vms} VMs ...", flush=True)
            took = await generate(path, vms, days, time.time())
            print(
                f"  minutes {took['minutes']:.0f} s (bulk SQL), records {took['records']:.0f} s "
                "(Store.write)",
                flush=True,
            )
            made = marker(path)
            assert made is not None
        until = made[2]
        window = Window(until - DAY, until)
        lo, hi = int(window.since * 1000), int(window.until * 1000)
        con = sqlite3.connect(path)
        counts = {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in (
                "metric", "metric_minute", "domain_event", "error_log", "health_result",
                "health_alert", "audit", "host_connection",
            )
        }  # fmt: skip
        con.close()
        size = path.stat().st_size / 1024 / 1024
        print(f"history: {size:,.0f} MiB; " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))

        async with Store(db_url(path), run_migrations=False) as store:
            tq = TimelineQueries(store)
            t_timeline, result = await median_s(runs, lambda: tq.timeline(window))
            out = Path(tmp) / "export.json"

            async def export() -> Sequence[str]:
                # as the screen's key does it: streamed to a private file, replaced whole
                return await write_window(store, window, out)

            # each run: the export, then its references back to back (the machine is shared)
            runs_s: dict[str, list[float]] = {"export": [], "select": [], "dump": [], "scan": []}
            cpu_s: list[float] = []
            for _ in range(runs):
                c0 = cpu_time()
                t_one, words = await median_s(1, export)
                cpu_s.append(cpu_time() - c0)
                runs_s["export"].append(t_one)
                runs_s["select"].append(bare(path, 1, BARE_EXPORT, lo, hi, None))
                runs_s["dump"].append(bare(path, 1, BARE_EXPORT, lo, hi, Path(tmp) / "bare.json"))
                runs_s["scan"].append(bare(path, 1, SCAN_EXPORT, lo, hi, None))
            t_export = statistics.median(runs_s["export"])
            export_mib = out.stat().st_size / 1024 / 1024

            class Reader(StoreRollupReader):
                """The store, its minute watermark set back by `behind` seconds."""

                behind = 0

                async def minute_watermarks(self) -> Mapping[str, int]:
                    marks = await super().minute_watermarks()
                    return {h: w - self.behind for h, w in marks.items()}

            async def first_pass() -> tuple[SpikeWatch, Reader]:
                # a start: each series' 24 h of minute means read once; 10 minutes judged
                reader = Reader(store)
                reader.behind = 60
                watch = SpikeWatch(reader, lambda _e: None, SpikeRules(), catch_up_s=600)
                await watch.judge_new()
                return watch, reader

            t_first, (watch, reader) = await median_s(max(1, runs // 2), first_pass)
            reader.behind = 0
            # then the last minute lands: every baseline is due (10 minutes since the first)
            t0 = time.perf_counter()
            await watch.judge_new()
            t_minute = time.perf_counter() - t0
            n_series = watch.minutes_judged // 11
        b_timeline = bare(path, runs, BARE_TIMELINE, lo, hi, None)
        med = {k: statistics.median(v) for k, v in runs_s.items()}
        print(
            f"TIMELINE 24 h window: {t_timeline * 1000:.0f} ms median of {runs} "
            f"({len(result.entries):,} entries, {sum(1 for e in result.entries if e.hint):,} "
            f"with hints); bare SELECTs {b_timeline * 1000:.0f} ms "
            f"-> {t_timeline / b_timeline:.1f}x; target < 200 ms"
        )
        print(
            f"EXPORT 24 h window: {t_export:.2f} s median of {runs} ({export_mib:.1f} MiB: "
            f"{'; '.join(words)}); target < 2 s"
        )
        print(
            f"  runs: {', '.join(f'{t:.2f}' for t in runs_s['export'])} s, using "
            f"{statistics.median(cpu_s):.2f} s of CPU (median; this process, all threads)"
        )
        print(
            "  same-run references "
            f"(sqlite3, medians): bare SELECTs of the same rows {med['select']:.2f} s "
            f"-> {ratios(runs_s['export'], runs_s['select'])}; + json.dump to a file "
            f"{med['dump']:.2f} s -> {ratios(runs_s['export'], runs_s['dump'])}; aggregate scan "
            f"of every value (builds nothing) {med['scan']:.2f} s "
            f"-> {ratios(runs_s['export'], runs_s['scan'])}"
        )
        print(
            f"SPIKE WATCH over {n_series:,} series: start (24 h of means read once, "
            f"10 minutes judged) {t_first:.1f} s; the next minute, every baseline "
            f"refreshed: {t_minute * 1000:.0f} ms"
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--vms", type=int, default=100)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--db", type=Path, help="keep the history here (reused when it matches)")
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    asyncio.run(main(a.vms, a.days, a.db, a.runs))
