"""Process CPU while watching 100 VMs whose every value changes each tick, at a 1 s
refresh, idle keyboard, over 60 s (target: under 3% of a core).

    .venv/bin/python -m bench.ui_cpu
"""

from __future__ import annotations

from bench.ui_watch import parent, report

if __name__ == "__main__":
    # the same dashboard with values that never change: what Textual and the
    # once-a-second ages cost before any cell changes, measured in the same run
    baseline = parent(vms=100, seconds=60.0, interval=1.0, static=True)
    report(baseline)
    changing = parent(vms=100, seconds=60.0, interval=1.0)
    report(changing)
    extra = float(str(changing["cpu_pct_of_core"])) - float(str(baseline["cpu_pct_of_core"]))
    print(f"changing values cost {extra:.2f}% of a core over the baseline")
