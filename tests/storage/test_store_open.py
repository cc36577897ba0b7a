"""Opening a store that cannot be opened is one clear AppError, whatever fails first."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtwatch.core.errors import AppError
from virtwatch.storage.engine import db_url
from virtwatch.storage.store import Store, StoreState


async def test_a_database_whose_directory_cannot_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store = Store(db_url(blocker / "sub" / "virtwatch.db"))
    with pytest.raises(AppError, match="cannot open the database") as info:
        await store.open()
    assert "a-file" in str(info.value)
    assert info.value.hint  # says what to check
    assert store.state is StoreState.CLOSED
