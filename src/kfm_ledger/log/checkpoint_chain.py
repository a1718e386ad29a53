"""kfm's checkpoint extension line ``kfm-previous-size <n>`` (an opaque extension line to
every other c2sp.org/tlog-checkpoint client).

Pure code.  Every checkpoint a kfm log signs after the first names the tree size it signed
just before, so a kept checkpoint that goes missing is noticed by ``kfm verify``.
"""

from __future__ import annotations

from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.errors import FormatError

__all__ = ["PREVIOUS_SIZE_EXTENSION", "previous_signed_size", "previous_size_line"]


#: The extension line a kfm log adds to each checkpoint it signs after the first:
#: ``kfm-previous-size <n>``, the size of the tree it signed just before.  Every signed
#: tree head thus names its predecessor, so a stored checkpoint that goes missing is
#: noticed (c2sp.org/tlog-checkpoint: extension lines are opaque to other clients).
PREVIOUS_SIZE_EXTENSION = "kfm-previous-size"


def previous_size_line(size: int) -> str:
    """The extension line naming ``size`` as the previously signed tree size."""
    return f"{PREVIOUS_SIZE_EXTENSION} {size}"


def previous_signed_size(checkpoint: Checkpoint) -> int | None:
    """The previously signed tree size a kfm checkpoint names, or None if it names none.

    Raises FormatError if it has the extension line but not a canonical decimal below its size.
    """
    for number, line in enumerate(checkpoint.extensions, start=4):  # after origin, size, root hash
        key, _, value = line.partition(" ")
        if key != PREVIOUS_SIZE_EXTENSION:
            continue
        if not (value.isascii() and value.isdigit() and len(value) <= 20) or str(int(value)) != value or int(
            value
        ) >= checkpoint.size:
            raise FormatError(
                f"checkpoint extension {line!r}: want {PREVIOUS_SIZE_EXTENSION} and a decimal size "
                f"below {checkpoint.size}",
                what="checkpoint",
                line=number,
                field=PREVIOUS_SIZE_EXTENSION,
                found=line,
            )
        return int(value)
    return None
