"""The mirror phase: the Parquet mirror, when one exists, matches a regeneration."""

from __future__ import annotations

from kfm_ledger.log.layout import MIRROR_KEY

from ..errors import KfmError
from . import access
from .context import Run


def check_mirror_file(run: Run) -> None:
    if not access.exists(run.ledger, MIRROR_KEY):
        return
    from ..mirror import verify_mirror

    run.report.mirror_checked = True
    try:
        problems = verify_mirror(run.ledger)
    except KfmError as e:
        problems = [str(e)]
    for problem in problems:
        run.fail("mirror", problem)
