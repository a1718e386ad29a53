"""The one place where verification touches the ledger's storage directly.

Verification reads what the :class:`~kfm_ledger.log.ledger.Ledger` has no public reader for
(listing stored checkpoints and tiles with bad names included, the raw JSONL as an append
log, the JSONL's local file for the worker processes): every such access goes through these
functions, so a change of the storage interface is adapted here alone.
"""

from __future__ import annotations

from collections.abc import Iterator

from kfm_ledger.log.layout import JSONL_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.storage import local_path_of

from ..storage.base import AppendLog


def list_keys(ledger: Ledger, prefix: str) -> Iterator[str]:
    return ledger.storage.list(prefix)


def read(ledger: Ledger, key: str) -> bytes:
    return ledger.storage.read(key)


def exists(ledger: Ledger, key: str) -> bool:
    return ledger.storage.exists(key)


def open_jsonl(ledger: Ledger) -> AppendLog:
    """The JSONL as the storage's append log (read with ``iter_chunks``; close it after)."""
    return ledger.storage.append_log(JSONL_KEY)


def jsonl_local_path(ledger: Ledger) -> str | None:
    """The JSONL's local file path, when the storage has one (the workers read it themselves)."""
    return local_path_of(ledger.storage, JSONL_KEY)
