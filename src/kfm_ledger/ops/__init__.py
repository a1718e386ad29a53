"""Reliability engineer operations over the ledger (rollback, diff, impact, energy, lineage, query)."""
