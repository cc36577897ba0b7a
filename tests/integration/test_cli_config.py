"""What a config user meets at once on the command line: `[storage] db` read by every
command (flag > VIRTWATCH_STORAGE__DB > file > default), `health`'s Nagios exit codes,
and a write that fails being one line naming the path."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from virtwatch.cli.main import main


def config_with_db(tmp_path: Path, db: Path) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[storage]\ndb = "{db}"\n')
    return cfg


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "configured.db"
    assert main(["db", "upgrade", "--db", str(path)]) == 0
    return path


def test_history_commands_read_the_configured_database(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config_with_db(tmp_path, db)
    assert main(["db", "stats", "--config", str(cfg)]) == 0
    assert main(["timeline", "--since", "1h", "--config", str(cfg)]) == 0
    assert main(["export", "--since", "1h", "--config", str(cfg)]) == 0
    capsys.readouterr()
    (tmp_path / "other").mkdir()
    missing = config_with_db(tmp_path / "other", tmp_path / "nowhere.db")
    assert main(["timeline", "--since", "1h", "--config", str(missing)]) == 2
    assert f"no database at {tmp_path / 'nowhere.db'}" in capsys.readouterr().err


def test_flag_beats_environment_beats_file(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config_with_db(tmp_path, tmp_path / "from-file.db")
    monkeypatch.setenv("VIRTWATCH_STORAGE__DB", str(db))
    assert main(["db", "stats", "--config", str(cfg)]) == 0  # the environment's: it exists
    capsys.readouterr()
    flag = tmp_path / "from-flag.db"
    assert main(["db", "stats", "--config", str(cfg), "--db", str(flag)]) == 2
    assert f"no database at {flag}" in capsys.readouterr().err


def test_vm_writes_its_audit_row_to_the_configured_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "audit.db"
    cfg = config_with_db(tmp_path, db)
    code = main(["vm", "start", "no-such-vm", "--uri", "test:///default", "--config", str(cfg)])
    assert code == 2
    assert db.exists()


def test_health_stores_its_results_in_the_configured_database(tmp_path: Path) -> None:
    db = tmp_path / "health.db"
    cfg = config_with_db(tmp_path, db)
    assert main(["health", "--uri", "test:///default", "--config", str(cfg)]) in (0, 1)
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        table = next(t for t in tables if "health" in t and "alert" not in t)
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0


def test_health_exits_3_when_it_cannot_judge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["health", "--no-such-flag"]) == 3
    bad = tmp_path / "config.toml"
    bad.write_text("[pool]\nmax_size = 0\n")
    assert main(["health", "--uri", "test:///default", "--config", str(bad)]) == 3
    err = capsys.readouterr().err
    assert "config key 'pool.max_size'" in err
    # other commands keep exit 2 for the same failure
    assert main(["config", "show", "--config", str(bad)]) == 2


def test_an_export_that_cannot_be_written_is_one_line(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    out = tmp_path / "no-such-dir" / "x.json"
    assert main(["export", "--db", str(db), "--since", "1h", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"cannot write {out}: No such file or directory" in err
    assert "bug" not in err


def test_a_database_whose_directory_cannot_be_made_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker / "sub" / "x.db"  # a directory under a file: never writable
    assert main(["db", "upgrade", "--db", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(blocker) in err
    assert "bug" not in err
