"""`kfm diff`: what changed between two environment states (two ledger rows).

:func:`diff_entries` compares row ``a`` (the "from" state) with row ``b`` (the "to"
state):

* **models**, matched by ``name``: *added* (name only in b), *removed* (only in a),
  *changed* (same name, different ``version`` or ``uri``).  A model identical on both
  sides is unchanged.  If a row lists one name several times, identical
  (name, version, uri) triples are paired off first; what is left of a name is a
  change when exactly one remains on each side, otherwise additions and removals.
* **configs**, matched by ``path`` the same way: *changed* means a different ``sha256``.
* **data snapshots**, matched by the pair (``stac``, ``lakefs_ref``): *added* / *removed*.
* **lakeFS repository**, **branch** and **producer**: ``{"from", "to"}`` when different.
* **energy** (``kwh``) and **carbon** (``co2e_kg``): ``b - a`` and the percentage
  ``(b - a) / a * 100`` (``None`` when ``a`` is 0).
* **time**: ``b.created_at - a.created_at`` in seconds (negative when b is older).

Order: items keep the order of the row they come from (a's for removals, b's for
additions and changes).  Pure: no I/O.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from msgspec import to_builtins

from ..schema import Config, DataSnapshot, Entry, Model, created_at_datetime

__all__ = [
    "DIFF_FORMAT",
    "ConfigChange",
    "EntryRef",
    "EnvDiff",
    "FieldChange",
    "ModelChange",
    "NumberDelta",
    "diff_entries",
    "format_duration",
    "render_diff",
]

#: The ``format`` field of ``kfm diff --json``.
DIFF_FORMAT = "kfm.diff/v1"


@dataclass(frozen=True)
class EntryRef:
    """Which row a side of the diff is."""

    index: int
    lakefs_commit: str
    lakefs_repo: str
    lakefs_branch: str
    created_at: str
    producer: str

    @classmethod
    def of(cls, entry: Entry) -> EntryRef:
        r = entry.row
        return cls(entry.index, r.lakefs_commit, r.lakefs_repo, r.lakefs_branch, r.created_at, r.producer)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "lakefs_commit": self.lakefs_commit,
            "lakefs_repo": self.lakefs_repo,
            "lakefs_branch": self.lakefs_branch,
            "created_at": self.created_at,
            "producer": self.producer,
        }


@dataclass(frozen=True)
class ModelChange:
    """A model present on both sides under one name, with a different version or URI."""

    name: str
    from_version: str
    to_version: str
    from_uri: str
    to_uri: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "from": {"version": self.from_version, "uri": self.from_uri},
            "to": {"version": self.to_version, "uri": self.to_uri},
        }


@dataclass(frozen=True)
class ConfigChange:
    """A config present on both sides under one path, with a different sha256."""

    path: str
    from_sha256: str
    to_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "from_sha256": self.from_sha256, "to_sha256": self.to_sha256}


@dataclass(frozen=True)
class FieldChange:
    """A scalar field that differs (repository, branch, producer)."""

    from_value: str
    to_value: str

    def to_json(self) -> dict[str, str]:
        return {"from": self.from_value, "to": self.to_value}


@dataclass(frozen=True)
class NumberDelta:
    """A number on both sides, its difference ``b - a`` and that as a percentage of ``a``."""

    a: float
    b: float

    @property
    def delta(self) -> float:
        return self.b - self.a

    @property
    def percent(self) -> float | None:
        if self.a == 0:
            return None
        pct = (self.b - self.a) / self.a * 100.0
        return pct if math.isfinite(pct) else None  # e.g. from a subnormal kwh: no Infinity in JSON

    def to_json(self) -> dict[str, Any]:
        pct = self.percent
        return {
            "from": self.a,
            "to": self.b,
            "delta": round(self.delta, 9),
            "percent": None if pct is None else round(pct, 4),
        }

    def describe(self, unit: str) -> str:
        pct = self.percent
        pct_text = "n/a" if pct is None else f"{pct:+.1f}%"
        return f"{self.delta:+.3f} {unit} ({pct_text})"


@dataclass(frozen=True)
class EnvDiff:
    """The difference between two rows; see the module docstring."""

    a: EntryRef
    b: EntryRef
    models_added: tuple[Model, ...]
    models_removed: tuple[Model, ...]
    models_changed: tuple[ModelChange, ...]
    configs_added: tuple[Config, ...]
    configs_removed: tuple[Config, ...]
    configs_changed: tuple[ConfigChange, ...]
    snapshots_added: tuple[DataSnapshot, ...]
    snapshots_removed: tuple[DataSnapshot, ...]
    repo: FieldChange | None
    branch: FieldChange | None
    producer: FieldChange | None
    energy_kwh: NumberDelta
    carbon_kg: NumberDelta
    seconds: float  #: b.created_at - a.created_at

    @property
    def environment_changed(self) -> bool:
        """Did models, configs, data snapshots, repository, branch or producer change?"""
        return any(
            (
                self.models_added, self.models_removed, self.models_changed,
                self.configs_added, self.configs_removed, self.configs_changed,
                self.snapshots_added, self.snapshots_removed,
                self.repo, self.branch, self.producer,
            )
        )

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` shape (docs/engineer.md, "kfm diff")."""
        return {
            "format": DIFF_FORMAT,
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "environment_changed": self.environment_changed,
            "models": {
                "added": [to_builtins(m) for m in self.models_added],
                "removed": [to_builtins(m) for m in self.models_removed],
                "changed": [c.to_json() for c in self.models_changed],
            },
            "configs": {
                "added": [to_builtins(c) for c in self.configs_added],
                "removed": [to_builtins(c) for c in self.configs_removed],
                "changed": [c.to_json() for c in self.configs_changed],
            },
            "data_snapshot": {
                "added": [to_builtins(s) for s in self.snapshots_added],
                "removed": [to_builtins(s) for s in self.snapshots_removed],
            },
            "lakefs_repo": self.repo.to_json() if self.repo else None,
            "lakefs_branch": self.branch.to_json() if self.branch else None,
            "producer": self.producer.to_json() if self.producer else None,
            "energy_carbon": {"kwh": self.energy_kwh.to_json(), "co2e_kg": self.carbon_kg.to_json()},
            "seconds_between": self.seconds,
        }




T = TypeVar("T", Model, Config)


def _match_by_key(
    a: Sequence[T], b: Sequence[T], key: Callable[[T], str]
) -> tuple[list[T], list[T], list[tuple[T, T]]]:
    """(added, removed, changed pairs) between two lists of items keyed by ``key``."""
    common = Counter(a) & Counter(b)  # identical items on both sides cancel out
    left_over_a = Counter(common)
    rest_a: list[T] = []
    for item in a:
        if left_over_a[item]:
            left_over_a[item] -= 1
        else:
            rest_a.append(item)
    left_over_b = Counter(common)
    rest_b: list[T] = []
    for item in b:
        if left_over_b[item]:
            left_over_b[item] -= 1
        else:
            rest_b.append(item)
    count_a = Counter(key(x) for x in rest_a)
    count_b = Counter(key(x) for x in rest_b)
    pair_keys = {k for k in count_a if count_a[k] == 1 and count_b.get(k) == 1}
    from_a = {key(x): x for x in rest_a if key(x) in pair_keys}
    changed = [(from_a[key(x)], x) for x in rest_b if key(x) in pair_keys]
    added = [x for x in rest_b if key(x) not in pair_keys]
    removed = [x for x in rest_a if key(x) not in pair_keys]
    return added, removed, changed


H = TypeVar("H", bound=Hashable)


def _set_diff(a: Sequence[H], b: Sequence[H]) -> tuple[list[H], list[H]]:
    set_a, set_b = set(a), set(b)
    added = list(dict.fromkeys(x for x in b if x not in set_a))
    removed = list(dict.fromkeys(x for x in a if x not in set_b))
    return added, removed


def _field(a: str, b: str) -> FieldChange | None:
    return None if a == b else FieldChange(a, b)


def diff_entries(a: Entry, b: Entry) -> EnvDiff:
    """The environment difference from row ``a`` to row ``b``."""
    ra, rb = a.row, b.row
    m_added, m_removed, m_changed = _match_by_key(ra.models, rb.models, lambda m: m.name)
    c_added, c_removed, c_changed = _match_by_key(ra.configs, rb.configs, lambda c: c.path)
    s_added, s_removed = _set_diff(ra.data_snapshot, rb.data_snapshot)
    return EnvDiff(
        a=EntryRef.of(a),
        b=EntryRef.of(b),
        models_added=tuple(m_added),
        models_removed=tuple(m_removed),
        models_changed=tuple(
            ModelChange(x.name, x.version, y.version, x.uri, y.uri) for x, y in m_changed
        ),
        configs_added=tuple(c_added),
        configs_removed=tuple(c_removed),
        configs_changed=tuple(ConfigChange(x.path, x.sha256, y.sha256) for x, y in c_changed),
        snapshots_added=tuple(s_added),
        snapshots_removed=tuple(s_removed),
        repo=_field(ra.lakefs_repo, rb.lakefs_repo),
        branch=_field(ra.lakefs_branch, rb.lakefs_branch),
        producer=_field(ra.producer, rb.producer),
        energy_kwh=NumberDelta(ra.energy_carbon.kwh, rb.energy_carbon.kwh),
        carbon_kg=NumberDelta(ra.energy_carbon.co2e_kg, rb.energy_carbon.co2e_kg),
        seconds=(created_at_datetime(rb) - created_at_datetime(ra)).total_seconds(),
    )


# -------------------------------------------------------------------- text


def format_duration(seconds: float) -> str:
    """``93784`` -> ``"1d 2h 3m 4s"``; sub-second parts are dropped unless that is all."""
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 1:
        return f"{sign}{s:g}s"
    whole = int(s)
    days, rem = divmod(whole, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return sign + " ".join(parts)


def _short(sha: str) -> str:
    return sha[:12]


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def diff_table_rows(d: EnvDiff) -> list[list[str]]:
    """The change rows (what, item, from, to, change) of the text table, without a header."""
    rows: list[list[str]] = []
    if d.repo:
        rows.append(["repository ~", "lakefs_repo", d.repo.from_value, d.repo.to_value, ""])
    if d.branch:
        rows.append(["branch ~", "lakefs_branch", d.branch.from_value, d.branch.to_value, ""])
    if d.producer:
        rows.append(["producer ~", "producer", d.producer.from_value, d.producer.to_value, ""])
    for mc in d.models_changed:
        note = "version" if mc.from_version != mc.to_version else "uri"
        rows.append(["model ~", mc.name, mc.from_version, mc.to_version, f"{note} changed"])
    for m in d.models_added:
        rows.append(["model +", m.name, "", m.version, ""])
    for m in d.models_removed:
        rows.append(["model -", m.name, m.version, "", ""])
    for cc in d.configs_changed:
        rows.append(["config ~", cc.path, _short(cc.from_sha256), _short(cc.to_sha256), "sha256 changed"])
    for c in d.configs_added:
        rows.append(["config +", c.path, "", _short(c.sha256), ""])
    for c in d.configs_removed:
        rows.append(["config -", c.path, _short(c.sha256), "", ""])
    for s in d.snapshots_added:
        rows.append(["snapshot +", s.stac, "", s.lakefs_ref, ""])
    for s in d.snapshots_removed:
        rows.append(["snapshot -", s.stac, s.lakefs_ref, "", ""])
    rows.append(["energy", "kwh", f"{d.energy_kwh.a:g}", f"{d.energy_kwh.b:g}", d.energy_kwh.describe("kWh")])
    rows.append(["carbon", "co2e_kg", f"{d.carbon_kg.a:g}", f"{d.carbon_kg.b:g}", d.carbon_kg.describe("kg")])
    return rows


def render_diff(d: EnvDiff) -> str:
    """The diff for a person: a header and an aligned plain-text table."""
    later = "later" if d.seconds >= 0 else "earlier"
    a, b = d.a, d.b
    head = [
        f"a: #{a.index} {a.lakefs_commit} ({a.lakefs_repo}/{a.lakefs_branch}, {a.created_at}, {a.producer})",
        f"b: #{b.index} {b.lakefs_commit} ({b.lakefs_repo}/{b.lakefs_branch}, {b.created_at}, {b.producer})",
        f"b is {format_duration(abs(d.seconds))} {later} than a"
        if d.seconds
        else "a and b have the same created_at",
        "",
    ]
    table = _aligned([["what", "item", "a", "b", "change"], ["----", "----", "-", "-", "------"], *diff_table_rows(d)])
    tail = [] if d.environment_changed else ["", "models, configs, data snapshots, branch and producer are the same"]
    return "\n".join(head + table + tail)
