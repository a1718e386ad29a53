"""Storage backends behind small interfaces (see :mod:`.base` for the contracts)."""

from __future__ import annotations

from .base import (
    LOCK_KEY,
    AppendLog,
    AppendLogStore,
    IndexLocator,
    LocalFiles,
    ObjectStore,
    PrivateObjects,
    Publisher,
    Storage,
    local_dir_of,
    local_path_of,
    read_private_of,
)
from .local import LocalStorage
from .memory import MemoryStorage, SimulatedCrash

__all__ = [
    "LOCK_KEY",
    "AppendLog",
    "AppendLogStore",
    "IndexLocator",
    "LocalFiles",
    "LocalStorage",
    "MemoryStorage",
    "ObjectStore",
    "PrivateObjects",
    "Publisher",
    "SimulatedCrash",
    "Storage",
    "local_dir_of",
    "local_path_of",
    "read_private_of",
]
