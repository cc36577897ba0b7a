"""libvirt's own event loop in one dedicated daemon thread.

libvirt needs an event loop implementation for domain events, keepalive and close
callbacks. `libvirtaio` breaks when API calls run in threads (see notes), so we use
`virEventRegisterDefaultImpl()` once per process, before the first `open()`, and
run `virEventRunDefaultImpl()` in a daemon thread. Callbacks arrive on that thread;
hop to asyncio with `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import threading

import libvirt

from virtwatch.core.libvirt.process import prepare_libvirt


class LibvirtEventThread:
    """Process-wide by libvirt's design: `ensure_running()` is idempotent and thread-safe."""

    _lock = threading.Lock()
    _thread: threading.Thread | None = None
    iterations = 0

    @classmethod
    def ensure_running(cls) -> None:
        prepare_libvirt()
        with cls._lock:
            if cls._thread is not None and cls._thread.is_alive():
                return
            libvirt.virEventRegisterDefaultImpl()
            thread = threading.Thread(target=cls._run, name="libvirt-events", daemon=True)
            cls._thread = thread
            thread.start()

    @classmethod
    def _run(cls) -> None:
        while True:
            # returns after each dispatched event or timeout; errors here are libvirt bugs
            if libvirt.virEventRunDefaultImpl() < 0:  # pragma: no cover
                continue
            cls.iterations += 1

    @classmethod
    def is_running(cls) -> bool:
        return cls._thread is not None and cls._thread.is_alive()
