"""Storage backends behind one narrow interface (see :mod:`.base` for the contract)."""

from __future__ import annotations

from .base import AppendLog, Storage
from .local import LocalStorage
from .memory import MemoryStorage, SimulatedCrash

__all__ = ["AppendLog", "LocalStorage", "MemoryStorage", "SimulatedCrash", "Storage"]
