"""Where a ledger's objects live: every storage key and key-naming rule, in one place.

Layout (keys in a :class:`~kfm_ledger.storage.Storage`; a local directory by default)::

    rollback-index.jsonl     the authoritative rows, one canonical JSON line each
    checkpoint               the latest signed checkpoint (c2sp.org/tlog-checkpoint)
    checkpoints/<size>       every checkpoint the log ever signed, kept forever
    tile/<L>/<N>[.p/<W>]     hash tiles (c2sp.org/tlog-tiles, :func:`kfm_ledger.core.tiles.tile_path`), derived
    tile-expansions.bin      inner nodes of full level-0 tiles (:mod:`kfm_ledger.log.expansions`), derived
    log.vkey                 the log's verifier key (Go sumdb/note text format)
    log.key                  the log's signing key, mode 0600 (unless kept elsewhere)
    rollback-index.parquet   the Parquet mirror (derived)
    index.sqlite             commit -> leaf index, derived (beside the ledger, not a storage object)

    pending-append           present only while an append is in progress (see :mod:`.recovery`)
"""

from __future__ import annotations

import os

JSONL_KEY = "rollback-index.jsonl"
CHECKPOINT_KEY = "checkpoint"
CHECKPOINTS_PREFIX = "checkpoints/"
VKEY_KEY = "log.vkey"
SKEY_KEY = "log.key"
MIRROR_KEY = "rollback-index.parquet"
PENDING_KEY = "pending-append"
TILES_PREFIX = "tile/"
ENTRIES_PREFIX = "tile/entries/"
#: Derived data: rows 1..8 of every full level-0 tile's expansion and a checksum, record
#: i at byte i * EXPANSION_BYTES, so a proof's first use of a tile reads 8 KB
#: instead of hashing 255 nodes.  Checked on use; rebuilt by `kfm rebuild`.
EXPANSIONS_KEY = "tile-expansions.bin"
#: The derived SQLite commit index's file name beside a local ledger (not a storage object).
INDEX_FILE = "index.sqlite"


def checkpoint_key(size: int) -> str:
    """The key of the checkpoint the log signed for tree ``size`` (kept forever)."""
    return f"{CHECKPOINTS_PREFIX}{size}"


def checkpoint_size_of(key: str) -> int | None:
    """The tree size a ``checkpoints/<size>`` key names (canonical decimal), else None."""
    name = key[len(CHECKPOINTS_PREFIX) :] if key.startswith(CHECKPOINTS_PREFIX) else ""
    if name.isdigit() and str(int(name)) == name:
        return int(name)
    return None


def mirror_file_name(named: str | os.PathLike[str] | None) -> str:
    """How messages name the Parquet mirror: the local file the user named (``--out``,
    ``--mirror-file``), else :data:`MIRROR_KEY`, the ledger's own."""
    return MIRROR_KEY if named is None else os.fspath(named)


def mirror_regenerate_command(named: str | os.PathLike[str] | None) -> str:
    """The command that writes that mirror afresh: ``kfm mirror``, or ``kfm mirror --out FILE``
    for a file the user named."""
    return "kfm mirror" if named is None else f"kfm mirror --out {os.fspath(named)}"
