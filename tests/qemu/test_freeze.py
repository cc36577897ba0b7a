"""Issue #11: libvirtd frozen (SIGSTOP), the real binaries watching. The dashboard in tmux
and `virtwatch record` run side by side through five freezes (20, 30, 45, 20 and 30 s);
neither may exit, both must be back within 5 s of SIGCONT, the screen must say the host
is not answering, each freeze must be one incident, and the recorder's history must have
one gap per freeze, as long as the freeze, and no other. Then libvirtd frozen and killed
while frozen, and one-shot commands started during a freeze.

Every freeze is thawed in `finally` (tests/daemon.py: `frozen`); the figures measured are
printed (run with -s to see them)."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import pytest

from tests.daemon import ensure_libvirtd, frozen, kill_libvirtd, libvirtd_pid, start_libvirtd
from tests.vms import QEMU_URI, diskless_xml, unique_name
from tests.waiting import wait_until

pytestmark = pytest.mark.qemu

BIN = str(Path(sys.executable).with_name("virtwatch"))
INTERVAL_S = 2.0
FREEZES_S = (20, 30, 45, 20, 30)
RECONNECT_BOUND_S = 5.0
# after a restart (not a thaw): the pool may be in its longest backoff (4 s, jittered), then
# an open and a tick
RESTART_BOUND_S = 10.0
WINDOW_S = 15  # [errors] window_s: a freeze's incident closes this long after the thaw
QUIET_S = WINDOW_S + 4  # between freezes: each freeze must be an incident of its own
LINK_CODES = ("LIBVIRT_CONNECTION_FAILED", "LIBVIRT_CONNECTION_LOST", "LIBVIRT_NOT_ANSWERING")
AGE = re.compile(r"data (\d+)s ago")


class Terminal:
    """The dashboard in its own tmux server (a socket of its own: other tests' tmux
    sessions, or a developer's, are never touched)."""

    def __init__(self, cmd: str) -> None:
        self.socket = f"vwfreeze-{uuid.uuid4().hex[:8]}"
        self._tmux("new-session", "-d", "-s", "dash", "-x", "120", "-y", "40", cmd)

    def _tmux(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        return out.stdout

    def text(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "dash")

    def header(self) -> str:
        return self.text().split("\n", 1)[0]

    def kill(self) -> None:
        self._tmux("kill-server")


@dataclass
class Watchers:
    """The dashboard (tmux) and the recorder (a plain process), each with its database."""

    term: Terminal
    recorder: subprocess.Popen[bytes]
    dash_db: Path
    rec_db: Path
    rc_file: Path
    recorder_err: Path

    def both_alive(self) -> None:
        assert self.recorder.poll() is None, (
            f"virtwatch record exited {self.recorder.returncode}: "
            + self.recorder_err.read_text()[-2000:]
        )
        assert not self.rc_file.exists(), f"the dashboard exited {self.rc_file.read_text()}"

    def fresh_on_screen(self) -> bool:
        """Connected ('●', with or without its word) and data at most a tick old (the
        line may leave 'data now' out when short of room; an older age stays)."""
        line = self.term.header()
        age = AGE.search(line)
        return "●" in line and (age is None or int(age.group(1)) <= INTERVAL_S + 1)

    def recorded_after(self, t: float) -> bool:
        return latest_sample(self.rec_db) > t


def query(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
        try:
            return list(c.execute(sql, args))
        except sqlite3.OperationalError:  # the schema is not there yet
            return []


def latest_sample(db: Path) -> float:
    rows = query(db, "SELECT max(ts_ms) FROM metric_sample")
    value = rows[0][0] if rows else None
    return float(value) / 1000 if isinstance(value, int) else 0.0


def sample_times(db: Path) -> list[float]:
    rows = query(db, "SELECT DISTINCT ts_ms FROM metric_sample ORDER BY ts_ms")
    return [float(r[0]) / 1000 for r in rows if isinstance(r[0], int)]


def link_incidents(db: Path) -> list[tuple[str, float, int]]:
    marks = ",".join("?" * len(LINK_CODES))
    rows = query(
        db,
        f"SELECT code, first_at_ms, count FROM error_log WHERE code IN ({marks}) AND vm IS NULL",
        *LINK_CODES,
    )
    return [(str(c), float(str(f)) / 1000, int(str(n))) for c, f, n in rows]


@pytest.fixture
def vms(hypervisor: None) -> Iterator[list[str]]:
    """Two tiny running VMs (transient: gone once destroyed in `finally`)."""
    names = [unique_name("vwfreeze") for _ in range(2)]
    conn = libvirt.open(QEMU_URI)
    try:
        for name in names:
            conn.createXML(diskless_xml(name), 0)
    finally:
        conn.close()
    try:
        yield names
    finally:
        ensure_libvirtd()  # thawed and running: a test may have killed it
        conn = libvirt.open(QEMU_URI)  # a new connection: the old daemon may be gone
        try:
            for name in names:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.lookupByName(name).destroy()
        finally:
            conn.close()


@pytest.fixture
def watchers(tmp_path: Path, vms: list[str]) -> Iterator[Watchers]:
    config = tmp_path / "config.toml"
    config.write_text(f"[errors]\nwindow_s = {WINDOW_S}\n")
    dash_db, rec_db = tmp_path / "dashboard.db", tmp_path / "recorder.db"
    rc_file, rec_err = tmp_path / "dashboard.rc", tmp_path / "recorder.err"
    common = ["--uri", QEMU_URI, "--config", str(config), "--interval", str(INTERVAL_S)]
    cmd = f"PYTHONFAULTHANDLER=1 {BIN} {' '.join(common)} --db {dash_db}; echo $? > {rc_file}"
    term = Terminal(cmd)
    with rec_err.open("wb") as err:
        recorder = subprocess.Popen(
            [BIN, "record", *common, "--db", str(rec_db)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={"PYTHONFAULTHANDLER": "1", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
        )
    w = Watchers(term, recorder, dash_db, rec_db, rc_file, rec_err)
    try:
        wait_until(
            lambda: "VMs" in w.term.header() and w.fresh_on_screen(),
            "the dashboard",
            timeout_s=60,
            seen=w.term.header,
        )
        wait_until(
            lambda: w.recorded_after(time.time() - 1), "the recorder's samples", timeout_s=60
        )
        yield w
    finally:
        ensure_libvirtd()
        recorder.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            recorder.wait(20)
        if recorder.poll() is None:
            recorder.kill()
        term.kill()


@dataclass
class Cycle:
    seconds: float
    stopped_at: float = 0.0
    thawed_at: float = 0.0
    during: str = ""  # the header line while frozen
    dashboard_back_s: float = 0.0
    recorder_back_s: float = 0.0
    gap_s: float = 0.0
    incidents: dict[str, int] = field(default_factory=dict)


def freeze_once(w: Watchers, seconds: float) -> Cycle:
    cycle = Cycle(seconds)
    with frozen(libvirtd_pid()) as stopped_at:
        cycle.stopped_at = stopped_at
        time.sleep(8)  # past the collector's answer deadline (5 s at 2 s ticks)
        cycle.during = w.term.header()
        time.sleep(max(0.0, seconds - (time.time() - stopped_at)))
    cycle.thawed_at = time.time()
    cycle.dashboard_back_s = wait_until(
        w.fresh_on_screen, "the dashboard to reconnect", seen=w.term.header
    )
    thawed = cycle.thawed_at
    cycle.recorder_back_s = wait_until(
        lambda: w.recorded_after(thawed), "the recorder to record again"
    )
    cycle.recorder_back_s = latest_sample(w.rec_db) - thawed  # when its sample was taken
    w.both_alive()
    return cycle


def check_history(w: Watchers, cycles: list[Cycle]) -> None:
    times = sample_times(w.rec_db)
    gaps = [(a, b) for a, b in itertools.pairwise(times) if b - a > 2 * INTERVAL_S + 1]
    for c in cycles:
        spanning = [(a, b) for a, b in gaps if a <= c.stopped_at + 1 and b >= c.thawed_at - 1]
        assert len(spanning) == 1, f"no single gap over the {c.seconds:g} s freeze: {gaps}"
        a, b = spanning[0]
        c.gap_s = b - a
        assert c.seconds - 1 <= c.gap_s <= c.seconds + INTERVAL_S + RECONNECT_BOUND_S, (
            f"the {c.seconds:g} s freeze left a {c.gap_s:.1f} s gap"
        )
        gaps.remove(spanning[0])
    assert not gaps, f"history missing outside the freezes: {gaps}"


def check_incidents(db: Path, cycles: list[Cycle], who: str) -> None:
    incidents = link_incidents(db)
    for c in cycles:
        mine = [i for i in incidents if c.stopped_at <= i[1] <= c.thawed_at + RECONNECT_BOUND_S]
        assert len(mine) == 1, f"{who}: the {c.seconds:g} s freeze made incidents {mine}"
        c.incidents[who] = mine[0][2]
        incidents.remove(mine[0])
    assert not incidents, f"{who}: link incidents outside any freeze: {incidents}"


def test_five_freezes_under_the_dashboard_and_the_recorder(watchers: Watchers) -> None:
    w = watchers
    cycles: list[Cycle] = []
    for seconds in FREEZES_S:
        if cycles:  # the last freeze's incident closes before this one starts
            time.sleep(max(0.0, QUIET_S - (time.time() - cycles[-1].thawed_at)))
        cycle = freeze_once(w, seconds)
        cycles.append(cycle)
        during = cycle.during
        assert "not answering" in during or "reconnecting" in during, during
        age = AGE.search(during)
        assert age is not None, during
        assert int(age.group(1)) >= 5, during
        assert cycle.dashboard_back_s <= RECONNECT_BOUND_S, cycle
        assert cycle.recorder_back_s <= RECONNECT_BOUND_S, cycle
    time.sleep(WINDOW_S + 2)  # the last incident closes: every row is final
    check_history(w, cycles)
    check_incidents(w.rec_db, cycles, "recorder")
    check_incidents(w.dash_db, cycles, "dashboard")
    w.both_alive()
    print("\nfreeze figures:", json.dumps([c.__dict__ for c in cycles], indent=1))


def test_frozen_then_killed_while_frozen_then_restarted(watchers: Watchers) -> None:
    w = watchers
    pid = libvirtd_pid()
    with frozen(pid):
        time.sleep(10)
        assert "not answering" in w.term.header() or "reconnecting" in w.term.header()
        kill_libvirtd()  # SIGKILL reaches a stopped process
    time.sleep(3)
    w.both_alive()
    assert "reconnecting" in w.term.header(), w.term.header()
    answered_at, took = start_libvirtd()
    back = wait_until(w.fresh_on_screen, "the dashboard after the restart", seen=w.term.header)
    assert wait_until(lambda: w.recorded_after(answered_at), "the recorder after it") >= 0
    recorder_back = latest_sample(w.rec_db) - answered_at
    assert recorder_back <= RESTART_BOUND_S, f"the recorder took {recorder_back:.1f} s"
    assert back <= RESTART_BOUND_S, f"the dashboard took {back:.1f} s after libvirtd answered"
    w.both_alive()
    print(
        f"\nkilled while frozen: libvirtd answered {took:.1f} s after its restart; back after "
        f"it: dashboard {back:.1f} s, recorder {recorder_back:.1f} s"
    )


def one_shot(*args: str, timeout_s: float) -> tuple[int, str, float]:
    started = time.monotonic()
    out = subprocess.run(
        [BIN, *args], capture_output=True, text=True, timeout=timeout_s + 30, check=False
    )
    return out.returncode, out.stderr + out.stdout, time.monotonic() - started


def test_one_shot_commands_during_a_freeze_end_with_one_line(
    tmp_path: Path, vms: list[str]
) -> None:
    """`vm` ends within its --timeout plus the 10 s libvirtd gets to answer, `snapshot`
    within those 10 s (+1 s between its two ticks), `health` with a critical
    libvirt.reachable; each exits 2, with no traceback. The VM is untouched after."""
    name = vms[0]
    db = tmp_path / "audit.db"
    pid = libvirtd_pid()
    try:
        with frozen(pid):
            rc, out, took = one_shot(
                "vm",
                "pause",
                name,
                "--uri",
                QEMU_URI,
                "--db",
                str(db),
                "--timeout",
                "5",
                timeout_s=15,
            )
            assert rc == 2, out
            assert "did not answer" in out, out
            assert len(out.strip().splitlines()) == 1, out  # one line, no traceback
            assert took <= 5 + 10 + 3, took
            rc, out, took_snap = one_shot("snapshot", "--uri", QEMU_URI, timeout_s=11)
            assert rc == 2, out
            assert "did not answer" in out, out
            assert len(out.strip().splitlines()) == 1, out
            assert took_snap <= 11 + 3, took_snap
            rc, out, took_health = one_shot("health", "--uri", QEMU_URI, timeout_s=20)
            assert rc == 2, out
            assert "Traceback" not in out, out
            assert re.search(r"crit\s+libvirt\.reachable", out), out
            assert took_health <= 20, took_health
    finally:
        ensure_libvirtd()
    time.sleep(2)
    state = subprocess.run(
        ["virsh", "-c", QEMU_URI, "domstate", name], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert state == "running", f"the pause asked during the freeze happened after it: {state}"
    rows = query(db, "SELECT action, outcome FROM audit")
    assert rows, "no audit row for the pause"
    assert all(r[0] == "pause" and r[1] != "verified" for r in rows), rows
    print(
        f"\none-shots during a freeze: vm {took:.1f} s, snapshot {took_snap:.1f} s, "
        f"health {took_health:.1f} s"
    )
