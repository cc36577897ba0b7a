"""A file replaced whole or not at all: written to a temporary file in the same
directory, flushed to disk, then renamed over the old one. On failure the temporary
file is removed and the old file is left as it was."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

PRIVATE = 0o600


class AtomicFile:
    """`with AtomicFile(path) as fh:` (or `async with`, which renames in a thread) writes
    text to `fh`; on a clean exit the text is on disk and at `path`, on an error `path`
    is untouched.

    The file gets `mode` (owner only unless told otherwise, whatever the umask); with
    `keep_mode`, a file that already exists keeps its own permissions instead.
    """

    def __init__(self, path: Path, *, mode: int = PRIVATE, keep_mode: bool = False) -> None:
        self.path = path.expanduser()
        self._mode = mode
        self._keep_mode = keep_mode
        self._open: tuple[IO[str], Path] | None = None

    def open(self) -> IO[str]:
        """Create the temporary file next to `path` and return it, open for writing."""
        if self._open is not None:
            raise RuntimeError(f"{self.path}: this AtomicFile is already open")
        mode = self._mode
        if self._keep_mode:
            with contextlib.suppress(FileNotFoundError):
                mode = stat.S_IMODE(self.path.stat().st_mode)
        fd, name = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            os.fchmod(fd, mode)
            fh = os.fdopen(fd, "w", encoding="utf-8")
        except BaseException:
            os.close(fd)
            os.unlink(name)
            raise
        self._open = (fh, Path(name))
        return fh

    def commit(self) -> None:
        """Flush and fsync what was written, then rename it over `path`."""
        fh, tmp = self._take()
        try:
            with fh:
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_directory(self.path.parent)

    def discard(self) -> None:
        """Close and remove the temporary file; `path` stays as it was."""
        fh, tmp = self._take()
        try:
            fh.close()
        finally:
            tmp.unlink(missing_ok=True)

    def _take(self) -> tuple[IO[str], Path]:
        if self._open is None:
            raise RuntimeError(f"{self.path}: this AtomicFile is not open")
        taken, self._open = self._open, None
        return taken

    def __enter__(self) -> IO[str]:
        return self.open()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    async def __aenter__(self) -> IO[str]:
        return self.open()  # an empty file: as quick as the loop's other syscalls

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            await asyncio.to_thread(self.commit)  # fsync may wait for the disk
        else:
            self.discard()  # here, not in a thread: it runs even when cancelled again


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable. Best effort: some file systems refuse to fsync a
    directory, and by now the new file is in place."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
