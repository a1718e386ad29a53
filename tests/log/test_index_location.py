"""Where a ledger keeps its derived commit index (log.ledger.index_location_for, storage.base.IndexLocator)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfm_ledger.errors import StorageError
from kfm_ledger.index import MemoryIndex, SqliteFileIndex
from kfm_ledger.log.layout import INDEX_FILE
from kfm_ledger.log.ledger import Ledger, index_location_for
from kfm_ledger.storage import IndexLocator, LocalFiles, LocalStorage, MemoryStorage

from conftest import ORIGIN, fill


class OtherBackend:
    """A backend with neither local files nor an index location (as an S3 backend might be).

    It delegates to a MemoryStorage but hides its ``index_location``; it defines ``__eq__``
    without ``__hash__`` (so it is unhashable), which the index choice must not need.
    """

    def __init__(self, inner: MemoryStorage) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        if name == "index_location":
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OtherBackend) and other._inner is self._inner

    __hash__ = None  # type: ignore[assignment]


def test_a_local_directory_keeps_its_index_beside_the_ledger(tmp_path: Path) -> None:
    location = index_location_for(LocalStorage(tmp_path))
    assert isinstance(location, SqliteFileIndex) and location.path == str(tmp_path / INDEX_FILE)


def test_the_memory_backend_says_where_its_index_lives() -> None:
    storage = MemoryStorage()
    assert isinstance(storage, IndexLocator) and not isinstance(storage, LocalFiles)
    location = index_location_for(storage)
    assert isinstance(location, MemoryIndex)
    assert index_location_for(storage) is location is storage.index_location()  # shared, as a file is
    assert index_location_for(MemoryStorage()) is not location


def test_the_memory_index_is_lost_at_the_simulated_restart() -> None:
    led = Ledger.init(MemoryStorage(), origin=ORIGIN)
    fill(led, 3)
    storage = led.storage
    assert isinstance(storage, MemoryStorage)
    location = storage.index_location()
    conn = location.connect()
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
    conn.close()
    storage.crash(power_loss=False)
    conn = location.connect()  # the same location, a new empty database
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    conn.close()
    again = Ledger.open(storage)
    assert again.get(led.entry(1).row.lakefs_commit).index == 1  # rebuilt from the rows


def test_any_other_backend_needs_an_explicit_index() -> None:
    led = Ledger.init(MemoryStorage(), origin=ORIGIN)
    fill(led, 2)
    other = OtherBackend(led.storage)  # type: ignore[arg-type]
    assert not isinstance(other, IndexLocator) and not isinstance(other, LocalFiles)
    with pytest.raises(StorageError, match=r"pass index= to Ledger.open") as e:
        Ledger.open(other)  # type: ignore[arg-type]
    assert "memory" in str(e.value) and "MemoryIndex()" in str(e.value) and e.value.key == INDEX_FILE
    with Ledger.open(other, index=MemoryIndex()) as opened:  # type: ignore[arg-type]
        assert opened.size == 2 and opened.get(led.entry(0).row.lakefs_commit).index == 0
