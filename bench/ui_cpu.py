"""Process CPU while watching 100 VMs whose every value changes each tick, at a 1 s
refresh, idle keyboard, over 60 s (target: under 3% of a core).

The whole process is measured: the synthetic snapshots being made and published on
the real hub, the metric rings, and the dashboard in a real terminal (tmux, 200x60).
Each run also measures the same dashboard with values that never change (only the
uptimes tick over): what Textual, the rings and the once-a-second ages cost before
the screen has anything new to draw. This machine is shared and noisy: pass --runs 3
(or more) and read the medians.

    .venv/bin/python -m bench.ui_cpu [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics

from bench.ui_watch import parent, report


def cpu(data: dict[str, object]) -> float:
    return float(str(data["cpu_pct_of_core"]))


def main(runs: int) -> None:
    baseline: list[float] = []
    changing: list[float] = []
    for _ in range(runs):
        base = parent(vms=100, seconds=60.0, interval=1.0, static=True)
        report(base)
        live = parent(vms=100, seconds=60.0, interval=1.0)
        report(live)
        baseline.append(cpu(base))
        changing.append(cpu(live))
        print(f"changing values cost {cpu(live) - cpu(base):.2f}% of a core over the baseline")
    if runs > 1:
        print(
            f"medians of {runs} runs: every value changing {statistics.median(changing):.2f}% "
            f"(runs {', '.join(f'{c:.2f}' for c in changing)}), no value changing "
            f"{statistics.median(baseline):.2f}% of a core"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    main(ap.parse_args().runs)
