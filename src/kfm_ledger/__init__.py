"""kfm-ledger."""
