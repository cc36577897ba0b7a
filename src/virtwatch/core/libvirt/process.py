"""Process-wide libvirt setup. libvirt keeps these registrations globally, so the
composition root calls `prepare_libvirt()` once, before the first connection opens.
"""

from __future__ import annotations

import threading

import libvirt

_lock = threading.Lock()
_prepared = False


def _drop_error(_ctx: object, _err: object) -> None:
    """libvirt's default handler prints to stderr, which is the TUI's screen."""


def prepare_libvirt() -> None:
    """Replace libvirt's stderr error handler. Idempotent; errors still raise libvirtError."""
    global _prepared
    with _lock:
        if _prepared:
            return
        libvirt.registerErrorHandler(_drop_error, None)
        _prepared = True
