"""`kfm lineage` (W3C PROV-O as JSON-LD) and `kfm explain` (a narrative for a person).

Lineage: :func:`lineage_prov`
-----------------------------
One ledger row becomes a PROV-O graph (W3C PROV-O, https://www.w3.org/TR/prov-o/)
serialised as JSON-LD 1.1 (https://www.w3.org/TR/json-ld11/) with this ``@context``::

    prov  http://www.w3.org/ns/prov#
    xsd   http://www.w3.org/2001/XMLSchema#
    rdfs  http://www.w3.org/2000/01/rdf-schema#
    kfm   urn:kfm:prov:        (kfm's own terms, e.g. kfm:otelTraceId = urn:kfm:prov:otelTraceId)

Nodes in ``@graph`` and their identifiers (characters outside the IRI-safe set are
percent-encoded, RFC 3987 / RFC 3986 §2.1):

* the **producing run**: ``prov:Activity``, ``@id`` ``urn:openlineage:run:<openlineage_run_id>``,
  with ``kfm:openlineageRunId``, ``kfm:otelTraceId``, ``prov:endedAtTime`` =
  ``created_at`` (the row records one time only, when the run recorded its result, so
  ``prov:startedAtTime`` is absent), ``prov:wasAssociatedWith`` the producer,
  ``prov:used`` every input, ``kfm:energyKwh`` and ``kfm:co2eKg``;
* the **producer**: ``prov:SoftwareAgent``, ``@id`` ``urn:kfm:producer:<producer>``,
  ``rdfs:label`` the producer string (e.g. ``airflow:dag=kfm-promote``);
* **used** entities (``prov:Entity``, each typed also as a ``kfm:`` class):

  - data snapshot (``kfm:DataSnapshot``): ``@id`` the ``lakefs_ref`` IRI
    (``lakefs://<repo>@<ref>/<path>``), ``kfm:lakefsRef`` and ``kfm:stac`` (the STAC
    document URI) as ``xsd:anyURI`` literals;
  - model (``kfm:Model``): ``@id`` the model ``uri``, ``kfm:modelName``,
    ``kfm:modelVersion``;
  - config (``kfm:Config``): ``@id`` ``urn:kfm:config:<path>:sha256:<hex>`` (a config is
    its path with those exact bytes), ``kfm:path``, ``kfm:sha256``;

* **generated** entities (``prov:wasGeneratedBy`` the run):

  - the rollback bundle (``kfm:RollbackBundle``): ``@id`` ``artifact_uri``, ``kfm:sha256``;
  - the attestation (``kfm:Attestation``): ``@id`` ``signatures.in_toto``,
    ``kfm:attests`` the bundle;
  - the lakeFS commit (``kfm:LakefsCommit``): ``@id`` ``lakefs://<repo>/<commit>`` (the
    ref URI lakectl accepts for a commit), ``kfm:lakefsRepository``,
    ``kfm:lakefsBranch``, ``kfm:lakefsCommit``;

* the **ledger record** itself (``kfm:LedgerEntry``): ``@id``
  ``urn:kfm:ledger:<origin>:<index>``, ``kfm:logOrigin``, ``kfm:leafIndex``,
  ``kfm:leafHash`` (base64 RFC 9162 leaf hash of the stored line), ``kfm:records`` the
  commit, the bundle and the attestation; with ``proof``, ``kfm:inclusionVerified``
  and ``kfm:treeSize``.

Explain: :func:`explain_entry`
------------------------------
Compares the row with the **previous row on the same lakeFS repository and branch**,
found by scanning backward from the row, newest first, at most ``scan_limit`` rows
(default 100,000).  The scan reads stored lines in windows through the ledger's index
and decodes only lines whose canonical prefix names the same repository and branch
(every stored line starts ``{"lakefs_repo":...,"lakefs_branch":...``), so it is cheap
per row.  If none is found within the limit, the report says so (``previous: null``,
``search.exhausted`` false when the limit stopped it).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from kfm_ledger.core import merkle

from ..schema import Entry, Row
from .diff import EnvDiff, diff_entries, format_duration
from .rollback import ProofStatus, prove_entry

if TYPE_CHECKING:  # pragma: no cover
    from ..log.ledger import Ledger

__all__ = [
    "EXPLAIN_FORMAT",
    "PROV_CONTEXT",
    "Explanation",
    "PreviousSearch",
    "explain_entry",
    "find_previous_on_branch",
    "lineage_prov",
    "render_explanation",
]

#: The ``format`` field of ``kfm explain --json``.
EXPLAIN_FORMAT = "kfm.explain/v1"

#: The JSON-LD ``@context`` of ``kfm lineage``.
PROV_CONTEXT: dict[str, str] = {
    "prov": "http://www.w3.org/ns/prov#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "kfm": "urn:kfm:prov:",
}

# RFC 3986 unreserved + sub-delims + ":" "@" "/": kept as is; everything else escaped.
_IRI_SAFE = "-._~!$&'()*+,;=:@/"


def _enc(text: str) -> str:
    return quote(text, safe=_IRI_SAFE)


def _iri(text: str) -> str:
    """An absolute URI from the row (s3://, https://, lakefs://), escaped where needed."""
    return quote(text, safe=_IRI_SAFE + "?#%[]")


def _uri_literal(text: str) -> dict[str, str]:
    return {"@value": text, "@type": "xsd:anyURI"}


def _ref(iri: str) -> dict[str, str]:
    return {"@id": iri}


# ------------------------------------------------------------------ lineage


def _used_nodes(r: Row) -> list[dict[str, Any]]:
    """The run's inputs (data snapshots, models, configs) as PROV entities, one per ``@id``."""
    used: list[dict[str, Any]] = []
    for s in r.data_snapshot:
        used.append(
            {
                "@id": _iri(s.lakefs_ref),
                "@type": ["prov:Entity", "kfm:DataSnapshot"],
                "kfm:lakefsRef": _uri_literal(s.lakefs_ref),
                "kfm:stac": _uri_literal(s.stac),
            }
        )
    for m in r.models:
        used.append(
            {
                "@id": _iri(m.uri),
                "@type": ["prov:Entity", "kfm:Model"],
                "kfm:modelName": m.name,
                "kfm:modelVersion": m.version,
            }
        )
    for c in r.configs:
        used.append(
            {
                "@id": f"urn:kfm:config:{_enc(c.path)}:sha256:{c.sha256}",
                "@type": ["prov:Entity", "kfm:Config"],
                "kfm:path": c.path,
                "kfm:sha256": c.sha256,
            }
        )
    # The same input may be listed twice in a row; one node, one prov:used link each.
    return list({n["@id"]: n for n in used}.values())


def _ledger_record(
    entry: Entry, ledger_origin: str, records: list[dict[str, str]], proof: ProofStatus | None
) -> dict[str, Any]:
    """The ledger entry itself as a PROV entity that records ``records`` (commit, bundle,
    attestation), with the inclusion check's outcome when there was one."""
    record: dict[str, Any] = {
        "@id": f"urn:kfm:ledger:{_enc(ledger_origin)}:{entry.index}",
        "@type": ["prov:Entity", "kfm:LedgerEntry"],
        "kfm:logOrigin": ledger_origin,
        "kfm:leafIndex": entry.index,
        "kfm:leafHash": base64.b64encode(merkle.leaf_hash(entry.line)).decode(),
        "kfm:records": records,
    }
    if proof is not None:
        record["kfm:inclusionVerified"] = proof.verified
        record["kfm:treeSize"] = proof.tree_size
    return record


def lineage_prov(entry: Entry, ledger_origin: str, *, proof: ProofStatus | None = None) -> dict[str, Any]:
    """The row's provenance as a PROV-O JSON-LD document (see the module docstring)."""
    r = entry.row
    run_id = f"urn:openlineage:run:{_enc(r.openlineage_run_id)}"
    agent_id = f"urn:kfm:producer:{_enc(r.producer)}"
    bundle_id = _iri(r.artifact_uri)
    attestation_id = _iri(r.signatures.in_toto)
    commit_id = f"lakefs://{_enc(r.lakefs_repo)}/{_enc(r.lakefs_commit)}"

    used_nodes = _used_nodes(r)
    activity = {
        "@id": run_id,
        "@type": "prov:Activity",
        "kfm:openlineageRunId": r.openlineage_run_id,
        "kfm:otelTraceId": r.otel_trace_id,
        "prov:endedAtTime": {"@value": r.created_at, "@type": "xsd:dateTime"},
        "prov:wasAssociatedWith": _ref(agent_id),
        "prov:used": [_ref(n["@id"]) for n in used_nodes],
        "kfm:energyKwh": {"@value": r.energy_carbon.kwh, "@type": "xsd:double"},
        "kfm:co2eKg": {"@value": r.energy_carbon.co2e_kg, "@type": "xsd:double"},
    }
    agent = {"@id": agent_id, "@type": "prov:SoftwareAgent", "rdfs:label": r.producer}
    generated_by = _ref(run_id)
    bundle = {
        "@id": bundle_id,
        "@type": ["prov:Entity", "kfm:RollbackBundle"],
        "kfm:sha256": r.checksums.artifact_sha256,
        "prov:wasGeneratedBy": generated_by,
    }
    attestation = {
        "@id": attestation_id,
        "@type": ["prov:Entity", "kfm:Attestation"],
        "kfm:attests": _ref(bundle_id),
        "prov:wasGeneratedBy": generated_by,
    }
    commit = {
        "@id": commit_id,
        "@type": ["prov:Entity", "kfm:LakefsCommit"],
        "kfm:lakefsRepository": r.lakefs_repo,
        "kfm:lakefsBranch": r.lakefs_branch,
        "kfm:lakefsCommit": r.lakefs_commit,
        "prov:wasGeneratedBy": generated_by,
    }
    record = _ledger_record(entry, ledger_origin, [_ref(commit_id), _ref(bundle_id), _ref(attestation_id)], proof)
    return {
        "@context": dict(PROV_CONTEXT),
        "@graph": [activity, agent, *used_nodes, bundle, attestation, commit, record],
    }


# ------------------------------------------------------------------ explain


@dataclass(frozen=True)
class PreviousSearch:
    """How the previous row on the branch was looked for."""

    scanned: int  #: rows looked at
    limit: int
    exhausted: bool  #: true when the scan reached index 0 (so "no previous row" is certain)

    def to_json(self) -> dict[str, Any]:
        return {"scanned": self.scanned, "limit": self.limit, "exhausted": self.exhausted}


def _branch_prefix(repo: str, branch: str) -> bytes:
    import msgspec

    enc = msgspec.json.encode
    return b'{"lakefs_repo":' + enc(repo) + b',"lakefs_branch":' + enc(branch) + b","


def find_previous_on_branch(
    ledger: Ledger, entry: Entry, *, scan_limit: int = 100_000
) -> tuple[Entry | None, PreviousSearch]:
    """The newest row before ``entry`` with the same lakeFS repository and branch.

    Scans backward in growing windows (16, 64, ... up to 4096 rows), at most
    ``scan_limit`` rows.  Stored lines are canonical (schema field order, compact), so
    a byte-prefix test selects candidates; the candidate is then decoded and checked.
    """
    from ..schema import decode_row

    prefix = _branch_prefix(entry.row.lakefs_repo, entry.row.lakefs_branch)
    stop = entry.index
    floor = max(0, entry.index - scan_limit)
    window = 16
    scanned = 0
    while stop > floor:
        start = max(floor, stop - window)
        lines = list(ledger.iter_lines(start, stop))
        for offset in range(len(lines) - 1, -1, -1):
            scanned += 1
            line = lines[offset]
            if line.startswith(prefix):
                row = decode_row(line)
                if row.lakefs_repo == entry.row.lakefs_repo and row.lakefs_branch == entry.row.lakefs_branch:
                    return Entry(start + offset, line, row), PreviousSearch(scanned, scan_limit, False)
        stop = start
        window = min(window * 4, 4096)
    return None, PreviousSearch(scanned, scan_limit, floor == 0)


@dataclass(frozen=True)
class Explanation:
    """What ``kfm explain`` says about one row."""

    origin: str
    entry: Entry
    previous: Entry | None
    diff: EnvDiff | None  #: previous -> entry, when there is a previous row
    search: PreviousSearch
    proof: ProofStatus

    def narrative(self) -> list[str]:
        """The explanation as sentences / bullet lines for a person."""
        r = self.entry.row
        where = f"{r.lakefs_repo}/{r.lakefs_branch}"
        out = [
            f"Entry #{self.entry.index} of {self.origin} records lakeFS commit {r.lakefs_commit} on {where}.",
            f"It was produced by {r.producer} at {r.created_at} "
            f"(OpenLineage run {r.openlineage_run_id}, OTel trace {r.otel_trace_id}).",
            f"It used {r.energy_carbon.kwh:g} kWh and emitted {r.energy_carbon.co2e_kg:g} kg CO2e.",
        ]
        if self.previous is None or self.diff is None:
            if self.search.exhausted:
                out.append(f"It is the first entry on {where}: there is nothing earlier to compare with.")
            else:
                out.append(
                    f"No earlier entry on {where} within the {self.search.limit} rows searched; "
                    "nothing to compare with (raise --scan-limit to look further)."
                )
        else:
            d = self.diff
            p = self.previous.row
            out.append(
                f"Compared with the previous entry on {where} (#{self.previous.index}, commit "
                f"{p.lakefs_commit[:12]}, {format_duration(d.seconds)} earlier):"
            )
            changes = _change_lines(d)
            if changes:
                out += [f"  - {c}" for c in changes]
            else:
                out.append("  - models, configs and data snapshots are unchanged")
            out.append(
                f"  - energy {d.energy_kwh.describe('kWh')}, carbon {d.carbon_kg.describe('kg CO2e')}"
            )
        if self.proof.verified:
            out.append(
                f"Its inclusion proof verifies against the signed checkpoint (tree size {self.proof.tree_size})."
            )
        else:
            out.append(f"WARNING: its inclusion proof does NOT verify: {self.proof.reason}")
        return out

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` shape (docs/engineer.md, "kfm explain")."""
        r = self.entry.row
        return {
            "format": EXPLAIN_FORMAT,
            "origin": self.origin,
            "entry": {
                "index": self.entry.index,
                "lakefs_repo": r.lakefs_repo,
                "lakefs_branch": r.lakefs_branch,
                "lakefs_commit": r.lakefs_commit,
                "created_at": r.created_at,
                "producer": r.producer,
                "openlineage_run_id": r.openlineage_run_id,
                "otel_trace_id": r.otel_trace_id,
                "energy_carbon": {"kwh": r.energy_carbon.kwh, "co2e_kg": r.energy_carbon.co2e_kg},
            },
            "previous": None
            if self.previous is None
            else {
                "index": self.previous.index,
                "lakefs_commit": self.previous.row.lakefs_commit,
                "created_at": self.previous.row.created_at,
            },
            "changes": self.diff.to_json() if self.diff is not None else None,
            "search": self.search.to_json(),
            "proof": {
                "index": self.proof.index,
                "tree_size": self.proof.tree_size,
                "root": base64.b64encode(self.proof.root).decode(),
                "verified": self.proof.verified,
                "reason": self.proof.reason,
            },
            "narrative": self.narrative(),
        }


def _change_lines(d: EnvDiff) -> list[str]:
    out: list[str] = []
    if d.producer:
        out.append(f"producer changed from {d.producer.from_value} to {d.producer.to_value}")
    for mc in d.models_changed:
        if mc.from_version != mc.to_version:
            out.append(f"model {mc.name} {mc.from_version} -> {mc.to_version}")
        else:
            out.append(f"model {mc.name} {mc.to_version}: uri {mc.from_uri} -> {mc.to_uri}")
    out += [f"model {m.name} {m.version} added" for m in d.models_added]
    out += [f"model {m.name} {m.version} removed" for m in d.models_removed]
    out += [
        f"config {c.path} changed (sha256 {c.from_sha256[:12]} -> {c.to_sha256[:12]})" for c in d.configs_changed
    ]
    out += [f"config {c.path} added" for c in d.configs_added]
    out += [f"config {c.path} removed" for c in d.configs_removed]
    out += [f"data snapshot {s.stac} @ {s.lakefs_ref} added" for s in d.snapshots_added]
    out += [f"data snapshot {s.stac} @ {s.lakefs_ref} removed" for s in d.snapshots_removed]
    return out


def explain_entry(ledger: Ledger, entry: Entry, *, scan_limit: int = 100_000) -> Explanation:
    """Explain one row: its previous row on the branch, the diff, lineage ids, energy, proof."""
    previous, search = find_previous_on_branch(ledger, entry, scan_limit=scan_limit)
    return Explanation(
        origin=ledger.origin,
        entry=entry,
        previous=previous,
        diff=diff_entries(previous, entry) if previous is not None else None,
        search=search,
        proof=prove_entry(ledger, entry),
    )


def render_explanation(x: Explanation) -> str:
    return "\n".join(x.narrative())
