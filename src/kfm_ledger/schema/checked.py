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
from .rules import NUMBER_FIELDS, STORED_STRING_RULES, STRING_RULES, Rule

__all__ = ["CHECKED_ROW", "ROW_SHAPE", "STORED_CHECKED_ROW", "STORED_ROW_SHAPE", "joined"]


def _checked_twin(cls: type[msgspec.Struct], made: dict[type, Any], rules: dict[str, Rule] = STRING_RULES) -> Any:
    """A copy of struct ``cls`` whose leaf fields carry the rules as msgspec.Meta."""
    if cls in made:
        return made[cls]
    fields: list[tuple[str, Any]] = []
    for info in msgspec.structs.fields(cls):
        tp: Any = info.type
        if tp is str:
            rule = rules[info.name]
            extra = {"format": "date-time"} if info.name == "created_at" else None
            tp = Annotated[
                str, msgspec.Meta(pattern=rule.pattern, description=rule.description, extra_json_schema=extra)
            ]
        elif tp is float:
            tp = Annotated[float, msgspec.Meta(ge=0, description=NUMBER_FIELDS[info.name])]
        elif getattr(tp, "__origin__", None) is list:
            tp = list[_checked_twin(tp.__args__[0], made, rules)]  # type: ignore[misc]
        else:
            tp = _checked_twin(tp, made, rules)
        fields.append((info.name, tp))
    twin = msgspec.defstruct(
        cls.__name__, fields, frozen=True, forbid_unknown_fields=True, kw_only=True, module=__name__
    )
    twin.__doc__ = (cls.__doc__ or "").replace("``", "")
    made[cls] = twin
    return twin


CHECKED_ROW: Any = _checked_twin(Row, {})
#: The twin with the rules stored rows are read with (:data:`.rules.STORED_STRING_RULES`).
STORED_CHECKED_ROW: Any = _checked_twin(Row, {}, STORED_STRING_RULES)


def _inline_with(field: str, rules: dict[str, Rule]) -> str:
    """A rule's pattern without its anchors, for the combined regex.

    Fields are separated by NUL there (no field may contain a control character), so
    the one ``\\Z`` inside a pattern (lakefs_commit's "not '.' or '..'" lookahead, the
    commit being followed by a separator) becomes ``\\x00``.
    """
    pattern = rules[field].pattern
    assert pattern.startswith("^") and pattern.endswith(r"\Z")
    return pattern[1:-2].replace(r"\Z", r"\x00")


# The whole row's strings joined as joined() does: the eight top-level strings with NUL
# between them; then each data_snapshot element after \x01, each model after \x02, each
# config after \x03 (their fields NUL-separated); then \x04 artifact_sha256 NUL in_toto.
def _row_shape(rules: dict[str, Rule]) -> Any:
    def inline(field: str) -> str:
        return _inline_with(field, rules)

    return re.compile(
        r"\x00".join(
            inline(f)
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
        + r"(?:\x01" + inline("stac") + r"\x00" + inline("lakefs_ref") + ")*"
        + r"(?:\x02" + inline("name") + r"\x00" + inline("version") + r"\x00" + inline("uri") + ")*"
        + r"(?:\x03" + inline("path") + r"\x00" + inline("sha256") + ")*"
        + r"\x04" + inline("artifact_sha256") + r"\x00" + inline("in_toto")
    ).fullmatch


ROW_SHAPE = _row_shape(STRING_RULES)
#: ROW_SHAPE with the rules stored rows are read with.
STORED_ROW_SHAPE = _row_shape(STORED_STRING_RULES)


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

