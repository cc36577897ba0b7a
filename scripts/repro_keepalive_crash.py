"""Reproducer behind issue #11 (virtwatch died with SIGSEGV under a frozen libvirtd).

Freezes libvirtd (SIGSTOP, always SIGCONT in finally) while THREADS threads are inside
`getLibVersion` on ONE connection, optionally with client keepalive and a close of the
connection under the calls. Measured on libvirt 9.0 here (exit 139 = SIGSEGV):

    --threads 1 --keepalive            survives (the call fails with code 1, domain 7)
    --threads 2 --keepalive            SIGSEGV, 4 of 4 (in libvirt's client I/O loop)
    --threads 8 --keepalive --close    SIGSEGV, 3 of 3
    --threads 8 --close                survives, 3 of 3 (libvirt keeps the connection
                                       alive until the calls return); with one thread
                                       and keepalive it logs "not a virObjectLockable
                                       instance": memory used after it was freed

Hence virtwatch's rule (`Guard` in src/virtwatch/core/libvirt/connection.py): one thread at a
time inside libvirt per connection, and a connection closed only when none is inside.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import subprocess
import threading
import time

import libvirt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uri", default="qemu:///system")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keepalive", action="store_true", help="setKeepAlive(2, 2)")
    ap.add_argument("--close", action="store_true", help="close the connection mid-call")
    args = ap.parse_args()
    faulthandler.enable()
    libvirt.registerErrorHandler(lambda *_: None, None)
    libvirt.virEventRegisterDefaultImpl()

    def events() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=events, daemon=True).start()
    pid = int(subprocess.check_output(["pgrep", "-xo", "libvirtd"]).split()[0])
    conn = libvirt.open(args.uri)
    if args.keepalive:
        conn.setKeepAlive(2, 2)
    t0 = time.monotonic()
    results: list[str] = []

    def call() -> None:
        try:
            results.append(f"ok {conn.getLibVersion()} after {time.monotonic() - t0:.1f} s")
        except libvirt.libvirtError as err:
            code, domain = err.get_error_code(), err.get_error_domain()
            results.append(f"error {code}/{domain} after {time.monotonic() - t0:.1f} s")

    os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(args.threads):
            threading.Thread(target=call, daemon=True).start()
        time.sleep(1.0)
        if args.close:
            print(f"{time.monotonic() - t0:.1f} s: close -> {conn.close()}", flush=True)
        time.sleep(8.0 if args.keepalive else 2.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    time.sleep(3.0)
    print(f"survived; calls: {results}", flush=True)


if __name__ == "__main__":
    main()
