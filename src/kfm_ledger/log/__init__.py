"""The ledger on its storage: layout of keys, the :class:`~kfm_ledger.log.ledger.Ledger` facade and
the parts it is made of (append, recovery, proofs, rebuild, keys).

Importing this package imports none of its modules.
"""
