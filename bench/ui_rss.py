"""RSS after 10 minutes with 1,000 VMs, every value changing each 1 s tick
(target: under 200 MB). Takes 10 minutes.

    .venv/bin/python -m bench.ui_rss [--seconds 600]
"""

from __future__ import annotations

import argparse

from bench.ui_watch import parent, report

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600.0)
    report(parent(vms=1000, seconds=ap.parse_args().seconds, interval=1.0))
