"""Storage backends behind small interfaces (see :mod:`.base` for the contracts)."""

from __future__ import annotations

from .base import AppendLog, AppendLogStore, LocalFiles, ObjectStore, Publisher, Storage, local_path_of
from .local import LocalStorage
from .memory import MemoryStorage, SimulatedCrash

__all__ = [
    "AppendLog",
    "AppendLogStore",
    "LocalFiles",
    "LocalStorage",
    "MemoryStorage",
    "ObjectStore",
    "Publisher",
    "SimulatedCrash",
    "Storage",
    "local_path_of",
]
