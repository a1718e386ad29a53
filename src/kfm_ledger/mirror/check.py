"""Staleness and drift: how the stored mirror compares with the ledger."""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from kfm_ledger.core import merkle
from kfm_ledger.log.layout import MIRROR_KEY, mirror_file_name, mirror_regenerate_command
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.log.progress import Progress

from ..errors import MirrorDriftError
from . import files
from .build import build_mirror
from .drift import _explain_difference
from .layout import MIRROR_FORMAT_VERSION
from .metadata import MirrorMetadata, read_mirror_metadata

MirrorState = Literal["ok", "missing", "stale", "modified"]


@dataclass(frozen=True)
class MirrorStatus:
    """How the stored mirror compares with the ledger.

    ``state``: ``ok`` (byte-identical to a regeneration, or, when checked with
    ``regenerate=False``, its metadata names the current checkpoint); ``missing``;
    ``stale`` (it mirrors an older checkpoint of this log, or an older mirror format);
    ``modified`` (it differs from what kfm writes for the tree it claims: hand-edited,
    another log's, or written by another pyarrow release).  ``problems`` says what
    differs, most useful first; empty when ok.
    """

    state: MirrorState
    key: str
    path: str | None
    ledger_size: int
    ledger_root: bytes
    mirror_size: int | None = None
    mirror_root: bytes | None = None
    regenerated: bool = False  #: whether the bytes were compared with a regeneration
    named: bool = False  #: ``path`` is a file the user named (``--out``, ``--mirror-file``), not the ledger's own
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def to_json(self) -> dict[str, Any]:
        b64 = lambda h: None if h is None else base64.b64encode(h).decode()  # noqa: E731
        return {
            "state": self.state,
            "ok": self.ok,
            "key": self.key,
            "path": self.path,
            "ledger_size": self.ledger_size,
            "ledger_root": b64(self.ledger_root),
            "mirror_size": self.mirror_size,
            "mirror_root": b64(self.mirror_root),
            "regenerated": self.regenerated,
            "problems": list(self.problems),
        }

    def render_text(self) -> str:
        where = self.path or self.key
        if self.ok:
            how = "byte-identical to a regeneration" if self.regenerated else "metadata names the current checkpoint"
            return f"mirror OK: {where} mirrors tree size {self.ledger_size} ({how})"
        lines = [f"mirror {self.state.upper()}: {where}"]
        lines += [f"  {p}" for p in self.problems]
        what = "create it" if self.state == "missing" else "regenerate it"
        lines.append(f"  run `{self.regenerate_command}` to {what}")
        return "\n".join(lines)

    @property
    def regenerate_command(self) -> str:
        """The command that writes this mirror afresh (a named file's with ``--out``)."""
        return mirror_regenerate_command(self.path if self.named else None)

    def raise_for_status(self) -> None:
        """Raise :class:`MirrorDriftError` unless the mirror is ok."""
        if not self.ok:
            raise MirrorDriftError(self)


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def check_mirror(ledger: Ledger, *, regenerate: bool = True, progress: Progress | None = None) -> MirrorStatus:
    """Compare the stored mirror with the ledger (the spec's "Parquet regeneration correctness").

    Cheap checks first, from the file's footer: readable, the kfm metadata present and
    well-formed, this mirror format, this log's origin, the tree size and root (an older
    size whose root the log's tree confirms is *stale*; a root the log never had is
    *modified*).  Then, with ``regenerate`` (the default), the file must be
    byte-identical to :func:`build_mirror`; if not, the footers and then the rows are
    compared column by column to name the first difference.  Never raises for drift:
    see :meth:`MirrorStatus.raise_for_status`.  ``progress``: the regeneration's, as for
    :func:`build_mirror` (rows, once per row group); not called without a regeneration.
    """
    signed = ledger.checkpoint.checkpoint
    base = {
        "key": MIRROR_KEY,
        "path": files.mirror_local_path(ledger),
        "ledger_size": signed.size,
        "ledger_root": signed.root,
        "named": files.mirror_file(ledger) is not None,
    }
    # The file the messages name: a --out / --mirror-file file where one is given, else the ledger's own.
    name = mirror_file_name(ledger.mirror_file)
    if not files.mirror_exists(ledger):
        return MirrorStatus(
            state="missing",
            problems=(f"{name} does not exist",),
            **base,  # type: ignore[arg-type]
        )
    # The footer check alone reads only the footer of a local file; a full check needs the bytes.
    local = base["path"]
    stored = files.read_mirror_file(ledger) if regenerate or local is None else None

    def status(state: MirrorState, *problems: str, **extra: Any) -> MirrorStatus:
        return MirrorStatus(state=state, problems=tuple(problems), **base, **extra)  # type: ignore[arg-type]

    try:
        meta = read_mirror_metadata(stored if stored is not None else local)  # type: ignore[arg-type]
    except ValueError as e:
        return status("modified", f"{name} is {e}")
    found: dict[str, Any] = {"mirror_size": meta.tree_size, "mirror_root": meta.root}
    verdict = _footer_verdict(ledger, meta, name, functools.partial(status, **found))
    if verdict is not None:
        return verdict
    if not regenerate:
        return status("ok", **found)
    assert stored is not None
    fresh = build_mirror(ledger, progress=progress)
    if fresh == stored:
        return status("ok", regenerated=True, **found)
    return status("modified", *_explain_difference(stored, fresh, meta), regenerated=True, **found)


def _footer_verdict(
    ledger: Ledger, meta: MirrorMetadata, name: str, status: Callable[..., MirrorStatus]
) -> MirrorStatus | None:
    """What the footer alone says (stale or modified), or None when it names the current checkpoint."""
    signed = ledger.checkpoint.checkpoint
    if meta.format is None and meta.origin is None and meta.tree_size is None:
        return status("modified", f"{name} has no kfm mirror metadata (was it written by kfm?)")
    if meta.format != MIRROR_FORMAT_VERSION:
        return status(
            "stale",
            f"written in mirror format {meta.format!r}; this kfm writes format {MIRROR_FORMAT_VERSION!r}",
        )
    if meta.problems:
        return status("modified", *meta.problems)
    assert meta.tree_size is not None and meta.root is not None
    if meta.origin != signed.origin:
        return status("modified", f"it mirrors the log {meta.origin!r}, not this ledger's {signed.origin!r}")
    if meta.tree_size > signed.size:
        return status(
            "modified",
            f"its metadata claims tree size {meta.tree_size}, beyond the ledger's signed size {signed.size}",
        )
    if meta.tree_size < signed.size:
        old_root = merkle.tree_root(meta.tree_size, ledger.hash_reader(signed.size))
        if old_root != meta.root:
            return status(
                "modified",
                f"its metadata root {_b64(meta.root)} for tree size {meta.tree_size} is not the log's "
                f"root at that size ({_b64(old_root)})",
            )
        return status(
            "stale",
            f"it mirrors tree size {meta.tree_size} (root {_b64(meta.root)}); the ledger is at tree size "
            f"{signed.size} (root {_b64(signed.root)}): {signed.size - meta.tree_size} signed row(s) are "
            "not in the mirror",
        )
    if meta.root != signed.root:
        return status(
            "modified",
            f"its metadata root {_b64(meta.root)} differs from the signed root {_b64(signed.root)} "
            f"at tree size {signed.size}",
        )
    return None


def verify_mirror(ledger: Ledger) -> list[str]:
    """Problems with the stored mirror (empty when it is byte-identical to a regeneration).

    For ``kfm verify``: each string names the state and what differs.
    """
    result = check_mirror(ledger)
    if result.ok:
        return []
    return [f"{mirror_file_name(ledger.mirror_file)} {result.state}: {p}" for p in result.problems]


MirrorAfterAppend = Literal["absent", "stale", "regenerated"]


def mirror_after_append(
    ledger: Ledger, *, regenerate: bool, progress: Progress | None = None
) -> MirrorAfterAppend:
    """After an append: regenerate the mirror (``regenerate``, with ``progress`` as for
    :func:`write_mirror`), or say whether the one stored now mirrors an older tree
    (``stale``) or there is none (``absent``)."""
    if regenerate:
        from .build import write_mirror

        write_mirror(ledger, progress=progress)
        return "regenerated"
    return "stale" if files.mirror_exists(ledger) else "absent"
