"""`kfm impact`: the tree of dependent pipelines (spec, "Use in Reliability Systems").

Artifacts and their identity:

* a **model version**: the pair (``models[].name``, ``models[].version``) (the URI is not
  part of the identity);
* a **config**: the pair (``configs[].path``, ``configs[].sha256``): a config path with
  one content hash;
* a **data snapshot**: the pair (``data_snapshot[].stac``, ``data_snapshot[].lakefs_ref``):
  a STAC document pinned at one lakeFS ref.

Two questions:

``--commit SHA`` (:func:`impact_of_entry`)
    Entry E at leaf index *i* **introduced** an artifact when no entry with a smaller
    index uses it (E is its first user in leaf order).  The dependents are the entries
    with index > *i* that use at least one artifact E introduced.  Artifacts E uses but
    did not introduce are listed with the index of their first user and have no
    dependents here (ask about them by name).

``--model NAME[@VERSION]``, ``--config PATH[@SHA256]``, ``--dataset STAC_URI[@LAKEFS_REF]``
(:func:`impact_of_artifact`)
    Every entry (any index) that uses the named artifact; without the part after ``@``,
    any version / hash / ref of it.  The first of them is the one that introduced it.
    The ``@`` split is at the last ``@`` for models; for configs only when the rest is
    64 lower-case hex digits; for datasets at ``@lakefs://``.

The result is drawn as a tree: the root is the entry or the artifact, its children the
producers (sorted by name), their leaves the entries (by index) with the artifacts
that link each one.

**How it is fast.**  Stored lines are canonical JSON (:mod:`kfm_ledger.schema`), so an
artifact always appears in a line as the exact bytes ``{"name":<n>,"version":<v>,"uri":``
(``{"path":<p>,"sha256":<h>}``, ``{"stac":<s>,"lakefs_ref":<r>}``), with the strings
encoded as msgspec writes them.  Large blocks of the JSONL are searched for those bytes
(C-speed ``bytes.find``) and only the candidate lines are decoded, then checked field by
field; a line is never counted on the byte match alone.  Only the signed rows are read,
and the scan is proven: the tree is recomputed from the lines while they stream
(:mod:`kfm_ledger.log.reader`).

**Where the rows are found** (``source``, as for ``kfm report energy``): ``"jsonl"`` is the
proven scan above; ``"mirror"`` reads the Parquet mirror's list column(s) of the kinds asked
about and its ``leaf_hash`` column, finds the matching rows there with pyarrow, then reads
just those rows' lines from the JSONL (located by the commit index) and checks each one's
leaf hash against the mirror's before decoding it, so the report is built from the same
bytes, by the same code, as the scan's (the mirror's ``created_at`` is a timestamp and
cannot give the stored text back); ``"auto"`` (the default) is the mirror when its metadata
names the ledger's current checkpoint, else the scan.  A ``--commit`` entry itself is
proven by its lookup (``Ledger.get``).
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from kfm_ledger.log.ledger import Ledger
from kfm_ledger.log.progress import Progress

from ..errors import SelectorError
from ..schema import Entry

__all__ = [
    "IMPACT_FORMAT",
    "Artifact",
    "ImpactEntry",
    "ImpactReport",
    "InheritedArtifact",
    "ProducerGroup",
    "SelectorError",
    "artifacts_of",
    "impact_of_artifact",
    "impact_of_entry",
    "parse_selector",
]

#: The ``format`` field of ``kfm impact --json``.
IMPACT_FORMAT = "kfm.impact/v1"

Kind = Literal["model", "config", "dataset"]
Source = Literal["auto", "mirror", "jsonl"]


_encode = msgspec.json.encode

# kind -> (the row's list field, the element's key field, its detail field)
_FIELDS = {
    "model": ("models", "name", "version"),
    "config": ("configs", "path", "sha256"),
    "dataset": ("data_snapshot", "stac", "lakefs_ref"),
}


@dataclass(frozen=True)
class Artifact:
    """A model version, config or data snapshot; ``detail`` None means "any" (a selector).

    ``key`` is the model name / config path / STAC URI; ``detail`` the model version /
    config sha256 / lakeFS ref.
    """

    kind: Kind
    key: str
    detail: str | None = None

    def label(self) -> str:
        if self.detail is None:
            return f"{self.kind} {self.key}"
        detail = self.detail[:12] if self.kind == "config" else self.detail
        return f"{self.kind} {self.key}@{detail}"

    def to_json(self) -> dict[str, Any]:
        _, key_name, detail_name = _FIELDS[self.kind]
        return {"kind": self.kind, key_name: self.key, detail_name: self.detail}

    def fragment(self) -> bytes:
        """The bytes every canonical line using this artifact contains (see the module doc)."""
        k = _encode(self.key)
        d = None if self.detail is None else _encode(self.detail)
        if self.kind == "model":
            return b'{"name":' + k + b',"version":' + (d + b',"uri":' if d is not None else b"")
        if self.kind == "config":
            return b'{"path":' + k + b',"sha256":' + (d + b"}" if d is not None else b"")
        return b'{"stac":' + k + b',"lakefs_ref":' + (d + b"}" if d is not None else b"")

    def found_in(self, row: Any) -> list[Artifact]:
        """The concrete artifacts of ``row`` this one matches (a Row or a decoded slim row)."""
        list_name, key_name, detail_name = _FIELDS[self.kind]
        out: list[Artifact] = []
        for item in getattr(row, list_name):
            if getattr(item, key_name) != self.key:
                continue
            detail = getattr(item, detail_name)
            if self.detail is None:
                a = _concrete(self.kind, self.key, detail)
            elif detail == self.detail:
                a = self
            else:
                continue
            if a not in out:
                out.append(a)
        return out

    @functools.cached_property
    def json(self) -> dict[str, Any]:
        """:meth:`to_json`, computed once (one artifact links many entries)."""
        return self.to_json()


@functools.lru_cache(maxsize=4096)
def _concrete(kind: Kind, key: str, detail: str) -> Artifact:
    """One shared Artifact per (kind, key, detail) met while scanning."""
    return Artifact(kind, key, detail)


def artifacts_of(row: Any) -> list[Artifact]:
    """A row's artifacts, in row order (models, configs, data snapshots), without repeats."""
    found: list[Artifact] = []
    for a in (
        [Artifact("model", m.name, m.version) for m in row.models]
        + [Artifact("config", c.path, c.sha256) for c in row.configs]
        + [Artifact("dataset", d.stac, d.lakefs_ref) for d in row.data_snapshot]
    ):
        if a not in found:
            found.append(a)
    return found


_SHA256 = re.compile(r"[0-9a-f]{64}")


def parse_selector(kind: Kind, text: str) -> Artifact:
    """``NAME[@VERSION]``, ``PATH[@SHA256]`` or ``STAC_URI[@LAKEFS_REF]`` as an Artifact."""
    if not text or text != text.strip():
        raise SelectorError(
            f"--{kind}: expected a non-empty value without surrounding spaces, found {text!r}", kind=kind, value=text
        )
    key, detail = text, None
    if kind == "model" and "@" in text:
        key, detail = text.rsplit("@", 1)
    elif kind == "config" and "@" in text:
        head, tail = text.rsplit("@", 1)
        if _SHA256.fullmatch(tail):
            key, detail = head, tail
    elif kind == "dataset" and "@lakefs://" in text:
        at = text.rindex("@lakefs://")
        key, detail = text[:at], text[at + 1 :]
    if not key or detail == "":
        raise SelectorError(f"--{kind}: {text!r} has an empty part around '@'", kind=kind, value=text)
    return Artifact(kind, key, detail)


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class ImpactEntry:
    """A dependent entry and the artifacts that link it to the root."""

    index: int
    lakefs_commit: str
    created_at: str
    lakefs_branch: str
    producer: str
    links: tuple[Artifact, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "lakefs_commit": self.lakefs_commit,
            "created_at": self.created_at,
            "lakefs_branch": self.lakefs_branch,
            "producer": self.producer,
            "links": [a.json for a in self.links],
        }


@dataclass(frozen=True)
class ProducerGroup:
    producer: str
    entries: tuple[ImpactEntry, ...]

    def to_json(self) -> dict[str, Any]:
        return {"producer": self.producer, "count": len(self.entries), "entries": [e.to_json() for e in self.entries]}


@dataclass(frozen=True)
class InheritedArtifact:
    """An artifact the root entry uses but did not introduce: its first user's index."""

    artifact: Artifact
    first_index: int

    def to_json(self) -> dict[str, Any]:
        return {**self.artifact.to_json(), "first_index": self.first_index}


@dataclass(frozen=True)
class ImpactReport:
    """The dependency tree; ``root_entry`` for ``--commit``, ``selector`` for an artifact."""

    tree_size: int
    root_hash: bytes
    root_entry: ImpactEntry | None
    selector: Artifact | None
    introduced: tuple[Artifact, ...]  #: for a commit: what it introduced; for a selector: itself
    inherited: tuple[InheritedArtifact, ...]  #: for a commit: what earlier entries used first
    groups: tuple[ProducerGroup, ...]

    @property
    def entry_count(self) -> int:
        return sum(len(g.entries) for g in self.groups)

    def to_json(self) -> dict[str, Any]:
        root: dict[str, Any]
        if self.root_entry is not None:
            root = {"kind": "entry", **self.root_entry.to_json()}
            del root["links"]
        else:
            assert self.selector is not None
            root = {"kind": "artifact", "artifact": self.selector.to_json()}
        return {
            "format": IMPACT_FORMAT,
            "tree_size": self.tree_size,
            "root_hash": base64.b64encode(self.root_hash).decode(),
            "root": root,
            "introduced": [a.json for a in self.introduced],
            "inherited": [a.to_json() for a in self.inherited],
            "entry_count": self.entry_count,
            "producer_count": len(self.groups),
            "producers": [g.to_json() for g in self.groups],
        }

    def render_text(self, *, limit: int = 0) -> str:
        """The tree; ``limit`` > 0 shows at most that many entries per producer."""
        out: list[str] = []
        if self.root_entry is not None:
            e = self.root_entry
            out.append(f"entry {e.index} {e.lakefs_commit} ({e.created_at}, {e.lakefs_branch}, {e.producer})")
            if self.introduced:
                out.append("introduced: " + ", ".join(a.label() for a in self.introduced))
            else:
                out.append("introduced: nothing (every model version, config and data snapshot was used before)")
            for inh in self.inherited:
                out.append(f"used before: {inh.artifact.label()} (first at index {inh.first_index})")
        else:
            assert self.selector is not None
            out.append(f"{self.selector.label()}")
            first = min((x.index for g in self.groups for x in g.entries), default=None)
            if first is not None:
                out.append(f"first used at index {first}")
        for gi, group in enumerate(self.groups):
            last_group = gi == len(self.groups) - 1
            n = len(group.entries)
            out.append(f"{'└── ' if last_group else '├── '}{group.producer} ({n} entr{'y' if n == 1 else 'ies'})")
            pad = "    " if last_group else "│   "
            shown = group.entries if limit <= 0 else group.entries[:limit]
            hidden = n - len(shown)
            for ei, x in enumerate(shown):
                last = ei == len(shown) - 1 and not hidden
                via = ", ".join(a.label() for a in x.links)
                out.append(
                    f"{pad}{'└── ' if last else '├── '}{x.index} {x.lakefs_commit[:12]} {x.created_at} "
                    f"{x.lakefs_branch}  via {via}"
                )
            if hidden:
                out.append(f"{pad}└── ... and {hidden} more (use --limit 0 or --json for all)")
        noun = "dependent entr" + ("y" if self.entry_count == 1 else "ies")
        if self.root_entry is None:
            noun = "entr" + ("y uses" if self.entry_count == 1 else "ies use") + " it"
        out.append(f"{self.entry_count} {noun} across {len(self.groups)} producer(s) (tree size {self.tree_size})")
        return "\n".join(out)


# ------------------------------------------------------------------ scanning


class _Model(msgspec.Struct):
    name: str
    version: str


class _Config(msgspec.Struct):
    path: str
    sha256: str


class _Snapshot(msgspec.Struct):
    stac: str
    lakefs_ref: str


class _ImpactFields(msgspec.Struct):
    lakefs_branch: str
    lakefs_commit: str
    created_at: str
    producer: str
    data_snapshot: list[_Snapshot]
    models: list[_Model]
    configs: list[_Config]


class _ModelFields(msgspec.Struct):
    lakefs_branch: str
    lakefs_commit: str
    created_at: str
    producer: str
    models: list[_Model]


class _ConfigFields(msgspec.Struct):
    lakefs_branch: str
    lakefs_commit: str
    created_at: str
    producer: str
    configs: list[_Config]


class _DatasetFields(msgspec.Struct):
    lakefs_branch: str
    lakefs_commit: str
    created_at: str
    producer: str
    data_snapshot: list[_Snapshot]


# Decode only what is needed: every artifact kind (a commit's), or one kind (a selector's).
_DECODERS: dict[Kind | None, msgspec.json.Decoder[list[Any]]] = {
    None: msgspec.json.Decoder(list[_ImpactFields]),
    "model": msgspec.json.Decoder(list[_ModelFields]),
    "config": msgspec.json.Decoder(list[_ConfigFields]),
    "dataset": msgspec.json.Decoder(list[_DatasetFields]),
}


def _candidates(data: bytes, first_index: int, fragment: bytes, start: int = 0) -> Iterable[tuple[int, int, int]]:
    """(leaf index, line start, line end) of each line in ``data`` containing ``fragment``.

    ``data`` holds complete lines each ending in ``\\n``; lines are counted incrementally, so
    a block is read once per fragment however many lines match.
    """
    index = first_index
    counted_to = 0
    pos = data.find(fragment, start)
    while pos != -1:
        line_start = data.rfind(b"\n", 0, pos) + 1
        line_end = data.index(b"\n", pos)
        index += data.count(b"\n", counted_to, line_start)
        counted_to = line_start
        yield index, line_start, line_end
        pos = data.find(fragment, line_end + 1)


def _decode_lines(lines: Sequence[bytes], kind: Kind | None = None) -> list[Any]:
    return _DECODERS[kind].decode(b"[" + b",".join(lines) + b"]")


def _entry_of(index: int, row: Any, links: Sequence[Artifact]) -> ImpactEntry:
    return ImpactEntry(index, row.lakefs_commit, row.created_at, row.lakefs_branch, row.producer, tuple(links))


def _group(entries: Iterable[ImpactEntry]) -> tuple[ProducerGroup, ...]:
    by: dict[str, list[ImpactEntry]] = {}
    for e in entries:
        by.setdefault(e.producer, []).append(e)
    return tuple(ProducerGroup(p, tuple(sorted(es, key=lambda x: x.index))) for p, es in sorted(by.items()))


def _blocks(ledger: Ledger, progress: Progress | None = None) -> Iterable[Any]:
    from .. import mirror

    return mirror.iter_line_blocks(ledger, max_bytes=mirror.BLOCK_BYTES, progress=progress)


def impact_of_artifact(
    ledger: Ledger, selector: Artifact, *, source: Source = "auto", progress: Progress | None = None
) -> ImpactReport:
    """Every signed entry that uses ``selector`` (see the module doc), grouped by producer.

    ``source``: where the rows are found (see the module doc); every source gives the same report.
    """
    from .energy import use_mirror

    pairs: Iterable[tuple[int, Any]] | None = None
    if use_mirror(ledger, source):
        indexes, hashes = _mirror_uses(ledger, [selector])
        hits = indexes[selector]
        if _few_enough_to_read(ledger, len(hits)):
            pairs = zip(hits, _decode_lines(_mirror_lines(ledger, hits, hashes), selector.kind))
    if pairs is None:
        pairs = _scan_uses(ledger, selector, progress)
    found: list[ImpactEntry] = []
    for index, row in pairs:
        links = selector.found_in(row)
        if links:
            found.append(_entry_of(index, row, links))
    return ImpactReport(
        tree_size=ledger.size,
        root_hash=ledger.root,
        root_entry=None,
        selector=selector,
        introduced=(selector,),
        inherited=(),
        groups=_group(found),
    )


def _scan_uses(ledger: Ledger, selector: Artifact, progress: Progress | None) -> Iterable[tuple[int, Any]]:
    """(index, decoded row) of the candidate lines of the proven JSONL scan."""
    fragment = selector.fragment()
    for block in _blocks(ledger, progress):
        data = block.data
        hits = list(_candidates(data, block.first_index, fragment))
        if not hits:
            continue
        rows = _decode_lines([data[s:e] for _, s, e in hits], selector.kind)
        yield from zip((index for index, _, _ in hits), rows)


def impact_of_entry(
    ledger: Ledger, entry: Entry, *, source: Source = "auto", progress: Progress | None = None
) -> ImpactReport:
    """The later entries that use an artifact ``entry`` introduced, grouped by producer.

    For each of the entry's artifacts, a confirmed use before ``entry.index`` marks it as
    inherited (its first user's index is kept); uses after ``entry.index`` of the
    introduced ones are the dependents.  ``entry`` is the caller's (proven by
    ``Ledger.get``); ``source`` says where the other rows are found (see the module doc).
    """
    from .energy import use_mirror

    target = entry.index
    own = artifacts_of(entry.row)
    first_use: dict[Artifact, int] = {}  # inherited artifacts -> first user's index
    dependents: dict[int, tuple[Any, list[Artifact]]] = {}
    scan = True
    if use_mirror(ledger, source):
        uses, hashes = _mirror_uses(ledger, own)
        later: dict[int, list[Artifact]] = {}
        for artifact in own:
            indexes = uses[artifact]
            if indexes and indexes[0] < target:
                first_use[artifact] = indexes[0]
                continue
            for index in indexes:
                if index > target:
                    later.setdefault(index, []).append(artifact)
        wanted = sorted(later)
        if _few_enough_to_read(ledger, len(wanted)):
            scan = False
            rows = _decode_lines(_mirror_lines(ledger, wanted, hashes))
            for index, row in zip(wanted, rows):
                links = [a for a in later[index] if a.found_in(row)]
                if links:
                    dependents[index] = (row, links)
        else:
            first_use.clear()
    if scan:
        _scan_entry(ledger, target, own, first_use, dependents, progress)
    return _entry_report(ledger, entry, own, first_use, dependents)


def _scan_entry(
    ledger: Ledger,
    target: int,
    own: list[Artifact],
    first_use: dict[Artifact, int],
    dependents: dict[int, tuple[Any, list[Artifact]]],
    progress: Progress | None = None,
) -> None:
    """The proven JSONL scan of :func:`impact_of_entry`: fills ``first_use`` and ``dependents``."""
    fragments = {a: a.fragment() for a in own}
    for block in _blocks(ledger, progress):
        data = block.data
        for artifact, fragment in fragments.items():
            if artifact in first_use:
                continue
            later: list[tuple[int, int, int]] = []
            for hit in _candidates(data, block.first_index, fragment):
                index, start, end = hit
                if index > target:
                    later.append(hit)
                elif index < target and artifact.found_in(_decode_lines([data[start:end]])[0]):
                    first_use[artifact] = index  # used before: not introduced by the entry
                    break
            if artifact in first_use or not later:
                continue
            rows = _decode_lines([data[s:e] for _, s, e in later])
            for (index, _, _), row in zip(later, rows):
                if not artifact.found_in(row):
                    continue
                slot = dependents.get(index)
                if slot is None:
                    slot = dependents[index] = (row, [])
                slot[1].append(artifact)


def _entry_report(
    ledger: Ledger,
    entry: Entry,
    own: list[Artifact],
    first_use: dict[Artifact, int],
    dependents: dict[int, tuple[Any, list[Artifact]]],
) -> ImpactReport:
    introduced = [a for a in own if a not in first_use]
    inherited = [InheritedArtifact(a, first_use[a]) for a in own if a in first_use]
    entries = []
    for index, (row, links) in dependents.items():
        live = [a for a in own if a in links and a not in first_use]
        if live:
            entries.append(_entry_of(index, row, live))
    r = entry.row
    return ImpactReport(
        tree_size=ledger.size,
        root_hash=ledger.root,
        root_entry=ImpactEntry(entry.index, r.lakefs_commit, r.created_at, r.lakefs_branch, r.producer, ()),
        selector=None,
        introduced=tuple(introduced),
        inherited=tuple(inherited),
        groups=_group(entries),
    )


# ------------------------------------------------------------------ the mirror

#: The mirror path reads each matching row from the JSONL (through the commit index) to check its
#: bytes; past one row in this many of the ledger, the proven sequential scan of the whole JSONL
#: is faster than those scattered reads (``--config`` matching 2/3 of 1M rows), and gives the same
#: report.
SCAN_WHEN_MORE_THAN_ONE_IN = 8


def _few_enough_to_read(ledger: Ledger, rows: int) -> bool:
    return rows * SCAN_WHEN_MORE_THAN_ONE_IN <= max(ledger.size, 1)



def _mirror_uses(ledger: Ledger, artifacts: Sequence[Artifact]) -> tuple[dict[Artifact, list[int]], Any]:
    """For each artifact, the ascending leaf indexes of the mirror's rows that use it (a row
    matches as in :meth:`Artifact.found_in`); and the mirror's ``leaf_hash`` column.

    Reads only the list columns of the artifacts' kinds and ``leaf_hash``.  The mirror has
    one row per leaf in leaf order, so a row's position is its leaf index.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .. import mirror

    lists = sorted({_FIELDS[a.kind][0] for a in artifacts})
    data = mirror.mirror_source(ledger)
    parquet = pq.ParquetFile(data if isinstance(data, str) else pa.BufferReader(data))
    found: dict[Artifact, list[Any]] = {a: [] for a in artifacts}
    first = 0
    # One row group at a time: memory stays at one group's lists whatever the ledger size.
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group, columns=lists)
        flat: dict[str, tuple[Any, Any]] = {}
        for name in lists:
            column = table.column(name).combine_chunks()
            flat[name] = (pc.list_flatten(column), pc.list_parent_indices(column))
        for a in artifacts:
            list_name, key_name, detail_name = _FIELDS[a.kind]
            items, parents = flat[list_name]
            mask = pc.equal(pc.struct_field(items, key_name), pa.scalar(a.key))
            if a.detail is not None:
                mask = pc.and_(mask, pc.equal(pc.struct_field(items, detail_name), pa.scalar(a.detail)))
            positions = pc.unique(pc.filter(parents, mask))  # parents ascend: unique keeps the order
            if len(positions):
                found[a].append(pc.add(positions.cast(pa.int64()), first))
        first += table.num_rows
    uses = {a: [x for chunk in chunks for x in chunk.to_pylist()] for a, chunks in found.items()}
    leaf_hash = parquet.read(columns=["leaf_hash"]).column("leaf_hash") if any(uses.values()) else None
    return uses, leaf_hash


def _mirror_lines(ledger: Ledger, indexes: list[int], leaf_hash: Any) -> list[bytes]:
    """The signed lines of ``indexes`` (ascending), each checked against the mirror's leaf hash
    for it (skipped with ``--unverified``), so that the report is built from the same bytes
    as the JSONL scan's."""
    from ..log.reader import lines_checked_against

    if not indexes:
        return []
    hashes = None
    if ledger.verify_reads:
        hashes = [bytes(h) for h in leaf_hash.take(indexes).to_pylist()]
    if getattr(ledger, "is_remote", False):  # an S3 ledger: the rows from its entry bundles
        remote: Any = ledger
        return remote.lines_checked_against(indexes, hashes)
    return lines_checked_against(ledger, indexes, hashes)

