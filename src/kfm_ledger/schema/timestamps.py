"""``created_at``: parsing into an aware UTC datetime, and a sort key for its text.

Pure: no I/O.
"""

from __future__ import annotations

import datetime
import re

from ..errors import SchemaError
from .messages import show
from .rows import Row
from .rules import STORED_TIMESTAMP_PATTERN, STRING_RULES

__all__ = ["created_at_datetime", "created_at_order_key", "parse_created_at", "timestamp_to_datetime"]

_UTC = datetime.UTC


def created_at_order_key(created_at: str) -> str:
    """A string that sorts like ``created_at``'s instant: ``YYYY-MM-DDTHH:MM:SS.ffffff``.

    Plain string order is wrong for timestamps with and without fractions
    (``...:00Z`` sorts after ``...:00.5Z``); this key pads the fraction to six digits.
    ``created_at`` must have the schema's form.
    """
    fraction = created_at[20:-1] if len(created_at) > 20 else ""
    return created_at[:19] + "." + fraction.ljust(6, "0")

_UTC = datetime.UTC


def parse_created_at(text: str) -> datetime.datetime:
    """Parse a ``created_at`` value into an aware UTC datetime.

    Accepts the schema's form ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` (RFC 3339 §5.6, UTC, at
    most six fractional digits, so the result is exact), also in the older spellings a
    stored row may hold (``.0``, trailing zeros): it parses, it does not police spelling.  Raises
    :class:`SchemaError` at ``$.created_at`` when the text does not have that form or is
    not a real date and time.
    """
    if not isinstance(text, str) or _TIMESTAMP_RE.search(text) is None:
        expected = STRING_RULES["created_at"].expected
        raise SchemaError("$.created_at", f"expected {expected}, found {show(text)}")
    return timestamp_to_datetime(text)


def created_at_datetime(row: Row) -> datetime.datetime:
    """The row's ``created_at`` as an aware UTC datetime, for ordering checks.

    Compare these, not the strings: ``"...00Z"`` sorts after ``"...00.5Z"`` as text.
    """
    return timestamp_to_datetime(row.created_at)


_TIMESTAMP_RE = re.compile(STORED_TIMESTAMP_PATTERN)


def timestamp_to_datetime(text: str) -> datetime.datetime:
    # The pattern has fixed the layout: YYYY-MM-DDTHH:MM:SS[.ffffff]Z.
    try:
        micro = int(text[20:-1].ljust(6, "0")) if len(text) > 20 else 0
        return datetime.datetime(
            int(text[0:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            int(text[17:19]),
            micro,
            tzinfo=_UTC,
        )
    except ValueError as e:
        raise SchemaError(
            "$.created_at", f"not a real UTC date and time ({e}), found {show(text)}"
        ) from None

