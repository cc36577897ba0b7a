"""Process CPU while watching 100 VMs whose every value changes each tick, at a 1 s
refresh, idle keyboard, over 60 s (target: under 3% of a core).

    .venv/bin/python -m bench.ui_cpu
"""

from __future__ import annotations

from bench.ui_watch import parent, report

if __name__ == "__main__":
    report(parent(vms=100, seconds=60.0, interval=1.0))
