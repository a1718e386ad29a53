"""`python -m kfm_ledger` runs the `kfm` command line."""

from .cli import main

main()
