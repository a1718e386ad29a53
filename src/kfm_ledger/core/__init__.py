"""The pure core of kfm-ledger: bytes in, bytes out, no I/O, nothing imported from outer layers.

* :mod:`~kfm_ledger.core.merkle`: RFC 9162 §2.1 hashes, proof plans, proofs, verification,
  compact ranges.
* :mod:`~kfm_ledger.core.tiles`: c2sp.org/tlog-tiles coordinates, paths, tile building and a
  hash reader over stored tiles; :mod:`~kfm_ledger.core.tile_cache` an LRU of expanded tiles.
* :mod:`~kfm_ledger.core.note`: the c2sp.org/signed-note envelope; :mod:`~kfm_ledger.core.keys`
  its Ed25519 signer and verifier keys in Go's key text formats.
* :mod:`~kfm_ledger.core.checkpoint`: the c2sp.org/tlog-checkpoint body;
  :mod:`~kfm_ledger.core.signed_checkpoint` signing and opening it.
* :mod:`~kfm_ledger.core.cosignature`: c2sp.org/tlog-cosignature witness keys and checks.
* :mod:`~kfm_ledger.core.tlogproof`: c2sp.org/tlog-proof.

Importing this package imports none of its modules (each is imported on its own).
"""
