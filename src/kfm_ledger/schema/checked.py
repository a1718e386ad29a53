"""The rules applied to the row types: the checked twin of the structs and the combined row regex.

:data:`CHECKED_ROW` is a copy of :class:`~.rows.Row` whose leaf fields carry the rules as
``msgspec.Meta`` constraints: decoding with it names the field that broke a rule, and the
JSON Schema is generated from it.  :data:`ROW_SHAPE` checks every string rule of a decoded
row in one regex match over :func:`joined`.

Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from .rows import Row
from .rules import NUMBER_FIELDS, STRING_RULES

__all__ = ["CHECKED_ROW", "ROW_SHAPE", "joined"]


def _checked_twin(cls: type[msgspec.Struct], made: dict[type, Any]) -> Any:
    """A copy of struct ``cls`` whose leaf fields carry the rules as msgspec.Meta."""
    if cls in made:
        return made[cls]
    fields: list[tuple[str, Any]] = []
    for info in msgspec.structs.fields(cls):
        tp: Any = info.type
        if tp is str:
            rule = STRING_RULES[info.name]
            extra = {"format": "date-time"} if info.name == "created_at" else None
            tp = Annotated[
                str, msgspec.Meta(pattern=rule.pattern, description=rule.description, extra_json_schema=extra)
            ]
        elif tp is float:
            tp = Annotated[float, msgspec.Meta(ge=0, description=NUMBER_FIELDS[info.name])]
        elif getattr(tp, "__origin__", None) is list:
            tp = list[_checked_twin(tp.__args__[0], made)]  # type: ignore[misc]
        else:
            tp = _checked_twin(tp, made)
        fields.append((info.name, tp))
    twin = msgspec.defstruct(
        cls.__name__, fields, frozen=True, forbid_unknown_fields=True, kw_only=True, module=__name__
    )
    twin.__doc__ = (cls.__doc__ or "").replace("``", "")
    made[cls] = twin
    return twin


CHECKED_ROW: Any = _checked_twin(Row, {})


def _inline(field: str) -> str:
    """A rule's pattern without its anchors, for the combined regex.

    Fields are separated by NUL there (no field may contain a control character), so
    the one ``\\Z`` inside a pattern (lakefs_commit's "not '.' or '..'" lookahead, the
    commit being followed by a separator) becomes ``\\x00``.
    """
    pattern = STRING_RULES[field].pattern
    assert pattern.startswith("^") and pattern.endswith(r"\Z")
    return pattern[1:-2].replace(r"\Z", r"\x00")


# The whole row's strings joined as joined() does: the eight top-level strings with NUL
# between them; then each data_snapshot element after \x01, each model after \x02, each
# config after \x03 (their fields NUL-separated); then \x04 artifact_sha256 NUL in_toto.
ROW_SHAPE = re.compile(
    r"\x00".join(
        _inline(f)
        for f in (
            "lakefs_repo",
            "lakefs_branch",
            "lakefs_commit",
            "created_at",
            "producer",
            "openlineage_run_id",
            "otel_trace_id",
            "artifact_uri",
        )
    )
    + r"(?:\x01" + _inline("stac") + r"\x00" + _inline("lakefs_ref") + ")*"
    + r"(?:\x02" + _inline("name") + r"\x00" + _inline("version") + r"\x00" + _inline("uri") + ")*"
    + r"(?:\x03" + _inline("path") + r"\x00" + _inline("sha256") + ")*"
    + r"\x04" + _inline("artifact_sha256") + r"\x00" + _inline("in_toto")
).fullmatch


def joined(row: Row) -> str:
    """The row's strings laid out for ROW_SHAPE (every field is a str after decoding)."""
    return (
        f"{row.lakefs_repo}\x00{row.lakefs_branch}\x00{row.lakefs_commit}\x00{row.created_at}"
        f"\x00{row.producer}\x00{row.openlineage_run_id}\x00{row.otel_trace_id}\x00{row.artifact_uri}"
        + "".join([f"\x01{d.stac}\x00{d.lakefs_ref}" for d in row.data_snapshot])
        + "".join([f"\x02{m.name}\x00{m.version}\x00{m.uri}" for m in row.models])
        + "".join([f"\x03{c.path}\x00{c.sha256}" for c in row.configs])
        + f"\x04{row.checksums.artifact_sha256}\x00{row.signatures.in_toto}"
    )

