"""Issue #11's stress test against libvirtd: scripts/borrow_stress.py for 30 s, hundreds
of borrowers with random deadlines and cancellations, connections torn down and replaced,
and libvirtd frozen in bursts of 0.3-4 s with keepalive at 1 s x 2, under -X dev and
faulthandler. On the code before the borrow model it died with SIGSEGV (2 of 2 runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon import ensure_libvirtd
from tests.vms import QEMU_URI

pytestmark = pytest.mark.qemu
ROOT = Path(__file__).resolve().parents[2]
SECONDS = 30


def test_borrowers_deadlines_teardowns_and_a_freezing_libvirtd(hypervisor: None) -> None:
    env = {**os.environ, "MALLOC_PERTURB_": "165", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-X", "dev", "-X", "faulthandler", "scripts/borrow_stress.py"]
    try:
        out = subprocess.run(
            [*cmd, QEMU_URI, "--seconds", str(SECONDS), "--freeze", "--min-under-call", "5"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=3 * SECONDS + 180,
        )
    finally:
        ensure_libvirtd()  # SIGCONT even if the script died mid-freeze
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stderr[-4000:]}"
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["freeze"] >= 5, summary
    assert summary["ok"] > 100, summary
    assert summary["deadline"] > 50, summary
    assert summary["cancelled"] > 20, summary
    assert summary["teardown.under_call"] >= 5, summary  # closes deferred to the last thread
