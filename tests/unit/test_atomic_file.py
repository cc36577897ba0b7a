"""The one atomic write (exports, the config's [ui] table): a temporary file in the same
directory, fsynced, renamed over the old one; on failure the old file stays as it was
and no temporary file is left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from virtwatch.core.atomic_file import AtomicFile


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_it_writes_through_a_private_temporary_file_in_the_same_directory(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.json"
    with AtomicFile(path) as fh:
        fh.write("{}\n")
        (tmp,) = [p for p in tmp_path.iterdir() if p != path]
        assert tmp.name.startswith(".out.json.")
        assert tmp.name.endswith(".tmp")
        assert mode_of(tmp) == 0o600
        assert not path.exists()  # nothing at `path` until the rename
    assert path.read_text() == "{}\n"
    assert mode_of(path) == 0o600
    assert os.listdir(tmp_path) == ["out.json"]


def test_the_mode_is_set_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        with AtomicFile(tmp_path / "shared.txt", mode=0o644) as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "shared.txt") == 0o644


def test_an_existing_file_is_replaced_and_made_private_unless_its_mode_is_kept(
    tmp_path: Path,
) -> None:
    loose, kept = tmp_path / "loose", tmp_path / "kept"
    for p in (loose, kept):
        p.write_text("old")
        p.chmod(0o640)
    with AtomicFile(loose) as fh:
        fh.write("new")
    with AtomicFile(kept, keep_mode=True) as fh:
        fh.write("new")
    assert (loose.read_text(), mode_of(loose)) == ("new", 0o600)
    assert (kept.read_text(), mode_of(kept)) == ("new", 0o640)
    with AtomicFile(tmp_path / "fresh", keep_mode=True) as fh:  # nothing to keep: private
        fh.write("x")
    assert mode_of(tmp_path / "fresh") == 0o600


def test_a_failure_while_writing_leaves_the_old_file_and_no_temporary_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("old")

    def write_half() -> None:
        with AtomicFile(path) as fh:
            fh.write("half")
            raise ValueError("the writer failed")

    with pytest.raises(ValueError, match="writer failed"):
        write_half()
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["config.toml"]


def test_a_failed_rename_removes_the_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "taken"
    path.mkdir()  # a file cannot replace a directory
    with pytest.raises(IsADirectoryError), AtomicFile(path) as fh:
        fh.write("x")
    assert os.listdir(tmp_path) == ["taken"]
    assert os.listdir(path) == []


def test_the_data_is_fsynced_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        steps.append(f"fsync {kind}")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        steps.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with AtomicFile(tmp_path / "f") as fh:
        fh.write("x" * 100_000)  # more than the file object buffers
    assert steps == ["fsync file", "replace", "fsync dir"]


def test_a_missing_directory_is_an_error_not_a_silent_success(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), AtomicFile(tmp_path / "no" / "f"):
        pass


def test_misuse_is_named(tmp_path: Path) -> None:
    target = AtomicFile(tmp_path / "f")
    with pytest.raises(RuntimeError, match="not open"):
        target.commit()
    target.open()
    with pytest.raises(RuntimeError, match="already open"):
        target.open()
    target.discard()
    with pytest.raises(RuntimeError, match="not open"):
        target.discard()
    assert os.listdir(tmp_path) == []


async def test_async_with_renames_on_success_and_keeps_the_old_file_on_failure(
    tmp_path: Path,
) -> None:
    path = tmp_path / "export.json"
    async with AtomicFile(path) as fh:
        fh.write("first")
    assert (path.read_text(), mode_of(path)) == ("first", 0o600)

    async def export_half() -> None:
        async with AtomicFile(path) as fh:
            fh.write("second, half")
            raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError, match="database"):
        await export_half()
    assert path.read_text() == "first"
    assert os.listdir(tmp_path) == ["export.json"]
