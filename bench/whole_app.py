"""The whole program, as an admin runs it: the real `virtwatch` binary in tmux (160x48),
measured from outside as a process — CPU per thread, RSS after warm-up and at the end,
the age of the data on screen, and key latency (`?` sent, time until the help is on
screen). Each round measures, interleaved, the same-run references: a static Textual
table of 5 rows (bench/ui_floor.py, the floor) and, on the QEMU cases, the peer (VirtUI
Manager) when `--peer` names its binary. Medians of the rounds; ratios against the
references of the same run.

Cases: a100, a300, a1000 (libvirt's test driver, a private fleet of N VMs), q5 and q20
(N tiny QEMU VMs under libvirtd, created and destroyed here), c1000 (1,000 synthetic VMs
whose every value changes each tick, on the real hub: bench/ui_watch.py's child).

    .venv/bin/python -m bench.whole_app [--cases a100,q5] [--rounds 3] [--seconds 45]
        [--soak-minutes 30] [--peer /opt/virtui/bin/virtui-manager]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import psutil

from bench.ui_startup import fleet_xml  # every VM running: the busiest fleet of a size

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).with_name("virtwatch"))
QEMU_URI = "qemu:///system"
WARMUP_S = 10.0
AGE = re.compile(r"data (\d+)s ago")
KEY_TRIES = 5


def tiny_vm_xml(name: str) -> str:
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>"
        "<devices><memballoon model='none'/></devices></domain>"
    )


class Term:
    """One program in a tmux server of its own."""

    def __init__(self, cmd: str) -> None:
        self.socket = f"vwbench-{uuid.uuid4().hex[:8]}"
        self.tmux("new-session", "-d", "-s", "b", "-x", "160", "-y", "48", cmd)

    def tmux(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        return out.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "b")

    def pid(self) -> int:
        shell = int(self.tmux("display-message", "-p", "-t", "b", "#{pane_pid}").strip())
        proc = psutil.Process(shell)
        kids = proc.children(recursive=True)
        pythons = [k for k in kids if "python" in k.name()] or kids or [proc]
        return pythons[0].pid

    def kill(self) -> None:
        self.tmux("kill-server")


@dataclass
class Figures:
    cpu_pct: float  # of one core, the whole process
    threads: dict[str, float]  # CPU % per thread name
    rss_start_mib: float
    rss_end_mib: float
    age_max_s: float | None = None
    age_median_s: float | None = None
    key_ms: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


def thread_times(pid: int) -> dict[str, float]:
    """CPU seconds per thread: "main" (the event loop: Textual, the hub, the writer) and
    each other live thread by id (libvirt's event thread, SQLite's, calls in flight)."""
    out: dict[str, float] = {}
    for t in psutil.Process(pid).threads():
        name = "main" if t.id == pid else f"thread-{t.id}"
        out[name] = t.user_time + t.system_time
    return out


def measure(term: Term, seconds: float, *, ages: bool, keys: bool) -> Figures:
    pid = term.pid()
    proc = psutil.Process(pid)
    time.sleep(WARMUP_S)
    rss_start = proc.memory_info().rss / 2**20
    t0, cpu0, th0 = time.monotonic(), proc.cpu_times(), thread_times(pid)
    seen: list[float] = []
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        if ages:
            line = term.screen().split("\n", 1)[0]
            m = AGE.search(line)
            seen.append(float(m.group(1)) if m else 0.0)
    wall = time.monotonic() - t0
    cpu1, th1 = proc.cpu_times(), thread_times(pid)
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    threads = {n: 100.0 * (th1[n] - th0.get(n, 0.0)) / wall for n in th1}
    # threads that came and went (one per libvirt call) are in the total, not in `th1`
    threads["short-lived threads"] = max(0.0, 100.0 * cpu / wall - sum(threads.values()))
    fig = Figures(
        cpu_pct=100.0 * cpu / wall,
        threads={n: round(v, 2) for n, v in sorted(threads.items(), key=lambda kv: -kv[1])},
        rss_start_mib=rss_start,
        rss_end_mib=proc.memory_info().rss / 2**20,
    )
    if ages and seen:
        fig.age_max_s, fig.age_median_s = max(seen), statistics.median(seen)
    if keys:
        fig.key_ms = key_latency(term)
    return fig


def key_latency(term: Term) -> float:
    """Median ms from sending `?` to the help on screen ("Everywhere" is its first head)."""
    times = []
    for _ in range(KEY_TRIES):
        start = time.monotonic()
        term.tmux("send-keys", "-t", "b", "?")
        while "Everywhere" not in term.screen():
            if time.monotonic() - start > 60:
                break
            time.sleep(0.005)
        times.append((time.monotonic() - start) * 1000)
        term.tmux("send-keys", "-t", "b", "Escape")
        wait_for(lambda: "Everywhere" not in term.screen(), 30)
        time.sleep(0.5)
    return statistics.median(times)


def wait_for(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


@contextlib.contextmanager
def qemu_vms(count: int) -> Iterator[list[str]]:
    conn = libvirt.open(QEMU_URI)
    names = [f"vwbench-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    try:
        for name in names:
            conn.createXML(tiny_vm_xml(name), 0)
        yield names
    finally:
        for name in names:
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name).destroy()
        conn.close()


def run_virtwatch(uri: str, db: Path, seconds: float, vms: int) -> Figures:
    term = Term(f"{BIN} --uri {uri} --db {db}")
    try:
        wait_for(lambda: f"VMs {vms}" in term.screen() or "VMs " in term.screen(), 120)
        return measure(term, seconds, ages=True, keys=True)
    finally:
        term.kill()


def run_synthetic(vms: int, seconds: float) -> Figures:
    out = Path(tempfile.gettempdir()) / f"vwbench-{uuid.uuid4().hex[:6]}.json"
    cmd = (
        f"cd {ROOT} && {sys.executable} -m bench.ui_watch --child --vms {vms} "
        f"--seconds {seconds + WARMUP_S + 600} --interval 2 --out {out}"
    )
    term = Term(cmd)
    try:
        wait_for(lambda: "vm-" in term.screen(), 120)
        return measure(term, seconds, ages=False, keys=True)
    finally:
        term.kill()
        out.unlink(missing_ok=True)


def run_plain(cmd: str, seconds: float) -> Figures:
    term = Term(cmd)
    try:
        time.sleep(2.0)
        return measure(term, seconds, ages=False, keys=False)
    finally:
        term.kill()


def one_round(case: str, seconds: float, peer: str | None, work: Path) -> dict[str, Figures]:
    kind, n = case[0], int(case[1:])
    got: dict[str, Figures] = {}
    if kind == "a":
        xml = work / f"fleet-{n}.xml"
        xml.write_text(fleet_xml(n))
        got["virtwatch"] = run_virtwatch(f"test://{xml}", work / f"{case}.db", seconds, n)
    elif kind == "q":
        with qemu_vms(n):
            got["virtwatch"] = run_virtwatch(QEMU_URI, work / f"{case}.db", seconds, n)
            if peer:
                got["peer"] = run_plain(peer, seconds)
    elif kind == "c":
        got["virtwatch"] = run_synthetic(n, seconds)
    else:
        raise SystemExit(f"unknown case {case}")
    got["floor"] = run_plain(f"cd {ROOT} && {sys.executable} -m bench.ui_floor 5", seconds)
    return got


def median_of(rounds: list[dict[str, Figures]], who: str, attr: str) -> float | None:
    values = [getattr(r[who], attr) for r in rounds if who in r]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def report(case: str, rounds: list[dict[str, Figures]]) -> dict[str, object]:
    doc: dict[str, object] = {"case": case, "rounds": len(rounds)}
    for who in ("virtwatch", "peer", "floor"):
        if not any(who in r for r in rounds):
            continue
        doc[who] = {
            a: median_of(rounds, who, a)
            for a in ("cpu_pct", "rss_start_mib", "rss_end_mib", "age_max_s", "key_ms")
        }
    vw = median_of(rounds, "virtwatch", "cpu_pct")
    for ref in ("floor", "peer"):
        base = median_of(rounds, ref, "cpu_pct")
        if vw is not None and base:
            doc[f"cpu_vs_{ref}"] = round(vw / base, 2)
    last = rounds[-1]["virtwatch"]
    doc["threads_last_round"] = dict(list(last.threads.items())[:6])
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="a100,a300,a1000,q5,q20,c1000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=45.0)
    ap.add_argument("--soak-minutes", type=float, default=0.0, help="RSS over a long run")
    ap.add_argument("--peer", help="the peer's binary (VirtUI Manager), for the q cases")
    args = ap.parse_args()
    cases = args.cases.split(",")
    results: dict[str, list[dict[str, Figures]]] = {c: [] for c in cases}
    with tempfile.TemporaryDirectory(prefix="vwbench-") as tmp:
        work = Path(tmp)
        for _ in range(args.rounds):  # interleaved: every case once per round
            for case in cases:
                results[case].append(one_round(case, args.seconds, args.peer, work))
        docs = [report(c, results[c]) for c in cases]
        if args.soak_minutes > 0:
            xml = work / "soak.xml"
            xml.write_text(fleet_xml(1000))
            soak = run_virtwatch(f"test://{xml}", work / "soak.db", args.soak_minutes * 60, 1000)
            docs.append({"case": "soak a1000", "minutes": args.soak_minutes, **soak.__dict__})
    print(json.dumps(docs, indent=1))


if __name__ == "__main__":
    main()
