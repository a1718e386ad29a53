"""STAC validation without network: the STAC core JSON schemas shipped in pystac (docs/supply-chain.md).

A document is a STAC **Catalog** (``type`` ``Catalog``), **Collection** (``Collection``) or
**Item** (``Feature``) and must validate against that core schema (STAC 1.1.0, with the GeoJSON
Feature and Geometry schemas for Items), all read from the installed ``pystac`` package.
Every ``$ref`` resolves to those local files; one that does not is an error, never a download.
Objects that declare ``stac_version`` 1.0.0 are validated against the same core schemas with
the version constant accepted (1.1.0 core is a compatible superset for these objects); other
versions cannot be checked (``unsupported``).  ``stac_extensions`` schemas are not fetched or
checked.
"""

from __future__ import annotations

import functools
import json
from typing import Any

__all__ = ["STAC_VERSIONS", "StacProblem", "validate_stac", "validate_stac_cached"]

#: stac_version values checked against the shipped core schemas.
STAC_VERSIONS = ("1.0.0", "1.1.0")
_SCHEMA_VERSION = "1.1.0"
_BASE = f"https://schemas.stacspec.org/v{_SCHEMA_VERSION}"
_KINDS = {"Catalog": "catalog", "Collection": "collection", "Feature": "item"}
_NAMES = {"Catalog": "Catalog", "Collection": "Collection", "Feature": "Item"}


class StacProblem(Exception):
    """Why a document is not valid STAC; ``unsupported``: it could not be checked."""

    def __init__(self, message: str, *, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


@functools.lru_cache(maxsize=1)
def _validators() -> dict[str, Any]:
    import importlib.resources

    from jsonschema import Draft7Validator
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource

    root = importlib.resources.files("pystac.validation.jsonschemas")

    def load(rel: str) -> Any:
        return json.loads(root.joinpath(rel).read_text(encoding="utf-8"))

    resources: dict[str, Any] = {}
    spec = f"stac-spec/v{_SCHEMA_VERSION}"
    for name in ("item", "catalog", "collection"):
        resources[f"{_BASE}/{name}-spec/json-schema/{name}.json"] = load(f"{spec}/{name}.json")
    for name in ("bands", "basics", "common", "data-values", "datetime", "instrument", "licensing", "provider"):
        resources[f"{_BASE}/item-spec/json-schema/{name}.json"] = load(f"{spec}/{name}.json")
    for name in ("Feature", "Geometry"):
        resources[f"https://geojson.org/schema/{name}.json"] = load(f"geojson/{name}.json")

    def retrieve(uri: str) -> Resource[Any]:
        raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # never fetched: only the shipped schemas

    registry: Registry[Any] = Registry(retrieve=retrieve).with_resources(  # type: ignore[call-arg]
        (uri, Resource.from_contents(doc)) for uri, doc in resources.items()
    )
    return {
        kind: Draft7Validator(resources[f"{_BASE}/{kind}-spec/json-schema/{kind}.json"], registry=registry)
        for kind in ("catalog", "collection", "item")
    }


def validate_stac(data: bytes) -> str:
    """The kind (``Catalog``, ``Collection``, ``Item``) of a valid STAC document, else StacProblem."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise StacProblem(f"not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise StacProblem(f"valid JSON but not STAC: a JSON {type(doc).__name__}, not an object")
    kind = doc.get("type")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise StacProblem(f"valid JSON but not STAC: type {kind!r} is not Catalog, Collection or Feature (Item)")
    version = doc.get("stac_version")
    if not isinstance(version, str):
        raise StacProblem(f"valid JSON but not STAC: no stac_version (a {_NAMES[kind]} needs one)")
    if version not in STAC_VERSIONS:
        raise StacProblem(
            f"stac_version {version!r} cannot be checked (the shipped schemas cover {', '.join(STAC_VERSIONS)})",
            unsupported=True,
        )
    checked = {**doc, "stac_version": _SCHEMA_VERSION}
    from referencing.exceptions import Unresolvable

    try:
        errors = sorted(_validators()[_KINDS[kind]].iter_errors(checked), key=lambda e: list(e.absolute_path))
    except Unresolvable as e:  # pragma: no cover - the shipped schemas resolve among themselves
        raise StacProblem(f"a schema reference cannot be resolved offline: {e}", unsupported=True) from None
    if errors:
        first = _best(errors)
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.absolute_path)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise StacProblem(f"not a valid STAC {_NAMES[kind]}: {where}: {first.message}{more}")
    return _NAMES[kind]


def _best(errors: list[Any]) -> Any:
    from jsonschema.exceptions import best_match

    return best_match(errors) or errors[0]


_CACHE: dict[bytes, str | StacProblem] = {}
_CACHE_MAX = 4096


def validate_stac_cached(data: bytes) -> str:
    """:func:`validate_stac`, remembered by the SHA-256 of ``data`` (rows of one collection share
    their STAC documents; validation is a pure function of the bytes).  Thread-safe enough: a
    race validates twice, never answers wrongly."""
    import hashlib

    key = hashlib.sha256(data).digest()
    hit = _CACHE.get(key)
    if hit is None:
        try:
            hit = validate_stac(data)
        except StacProblem as e:
            hit = e
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[key] = hit
    if isinstance(hit, StacProblem):
        raise StacProblem(str(hit), unsupported=hit.unsupported)
    return hit
