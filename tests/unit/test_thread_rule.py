"""The borrow model's rule, kept by a test: only the connection modules start threads that
could touch libvirt. Everything else calls `Borrowed.call` (issue #11: a thread of a
borrower whose deadline passed used a connection the pool had closed -> SIGSEGV)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "virtwatch"

# the modules that own libvirt threads (they count every call; see core/libvirt/calls.py)
OWNERS = {
    "core/libvirt/calls.py",
    "core/libvirt/connection.py",
    "core/libvirt/pool.py",
    "core/libvirt/eventloop.py",
}
# threads elsewhere that cannot reach libvirt, each with its reason
ALLOWED = {
    ("core/atomic_file.py", "asyncio.to_thread"): "fsync and rename of a file written whole",
    ("storage/retention.py", "asyncio.to_thread"): "the SQLite file's size",
    ("cli/compose.py", "asyncio.to_thread"): "importing the store's modules off the loop",
}
THREAD_STARTERS = {
    "asyncio.to_thread",
    "to_thread",
    "run_in_executor",
    "threading.Thread",
    "Thread",
    "ThreadPoolExecutor",
    "in_daemon_thread",
}


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base in ("asyncio", "threading") else node.attr
    return ""


def thread_starts(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _name(node.func)
            if name in THREAD_STARTERS:
                found.append((name, node.lineno))
    return found


def test_only_the_connection_modules_start_threads_that_could_touch_libvirt() -> None:
    offenders = []
    seen_allowed = set()
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in OWNERS:
            continue
        for name, line in thread_starts(path):
            key = (rel, name)
            if key in ALLOWED:
                seen_allowed.add(key)
                continue
            offenders.append(f"{rel}:{line}: {name}(...)")
    assert not offenders, (
        "blocking libvirt calls go through `Borrowed.call` (core/libvirt/calls.py); "
        "a thread started elsewhere can outlive its borrow:\n" + "\n".join(offenders)
    )
    assert seen_allowed == set(ALLOWED), f"stale exceptions: {set(ALLOWED) - seen_allowed}"


def test_the_owners_do_start_threads_so_the_scan_sees_them() -> None:
    """The scan itself works: the pool and the connection module are where threads are."""
    assert thread_starts(SRC / "core" / "libvirt" / "calls.py")
    assert thread_starts(SRC / "core" / "libvirt" / "pool.py")


def test_no_raw_connection_leaves_a_borrow() -> None:
    """Sources yield `Borrowed`, never a virConnect: no function outside the owners
    returns a libvirt object (a listener factory returning a Callable that takes one,
    to run inside a counted call, is fine)."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in OWNERS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
                text = ast.unparse(node.returns)
                if text.startswith("Callable"):
                    continue
                if "virConnect" in text or "virDomain" in text:
                    offenders.append(f"{rel}:{node.lineno}: {node.name} -> {text}")
    assert not offenders, "\n".join(offenders)
