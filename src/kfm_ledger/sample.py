"""Deterministic sample rows (for `kfm demo`, tests and benchmarks).

The rows look like a real KFM deployment: a few repositories and branches,
Airflow/Dagster producers, models whose versions move on now and then, configs
whose hashes change, STAC snapshots pinned to lakeFS refs.  Row ``i`` is a pure
function of ``i`` and ``seed``, so two runs make the same ledger.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from .schema.codec import encode_row
from .schema.rows import Checksums, Config, DataSnapshot, EnergyCarbon, Model, Row, Signatures

_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
_BRANCHES = ("prod", "staging", "dev")
_PRODUCERS = (
    "airflow:dag=kfm-promote",
    "airflow:dag=kfm-hydrology-ingest",
    "dagster:job=focus-retrain",
    "github-actions:workflow=release",
)
_MODELS = ("focus-transformer", "hydro-lstm", "landcover-unet")
_CONFIGS = ("configs/pipeline.yaml", "configs/model.yaml", "configs/stac.yaml")
_COLLECTIONS = ("landsat-c2", "kansas-hydro", "ks-parcels")


def _hex(*parts: object) -> str:
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()


def sample_commit(i: int, seed: int = 0) -> str:
    """The lakeFS commit id of sample row ``i``: 64 hex digits, like lakeFS's."""
    return _hex("commit", seed, i)


def sample_row(i: int, seed: int = 0) -> Row:
    """Sample row number ``i`` (created_at increases with ``i``)."""
    commit = sample_commit(i, seed)
    repo = "kfm-main" if i % 5 else "kfm-hydrology"
    branch = _BRANCHES[i % len(_BRANCHES)]
    created = _EPOCH + timedelta(minutes=37 * i)
    models = [
        Model(
            name=name,
            version=f"{3 - k}.{(i // (40 + 13 * k)) % 10}.{(i // 7) % 3}",
            uri=f"s3://kfm-models/{name}/{3 - k}.{(i // (40 + 13 * k)) % 10}.{(i // 7) % 3}.bin",
        )
        for k, name in enumerate(_MODELS[: 1 + i % 2])
    ]
    configs = [
        Config(path=path, sha256=_hex("config", seed, path, i // (25 + 10 * k)))
        for k, path in enumerate(_CONFIGS[: 1 + i % 3])
    ]
    snapshot_ref = i // 3
    data_snapshot = [
        DataSnapshot(
            stac=f"s3://kfm-stac/{coll}/{snapshot_ref}/collection.json",
            lakefs_ref=f"lakefs://{repo}@{_hex('ref', seed, snapshot_ref)[:16]}/stac/{coll}",
        )
        for coll in _COLLECTIONS[: 1 + i % 2]
    ]
    run = _hex("run", seed, i)  # a UUIDv4-shaped OpenLineage run id
    kwh = round(0.5 + (i * 7919 % 1000) / 250.0, 3)
    return Row(
        lakefs_repo=repo,
        lakefs_branch=branch,
        lakefs_commit=commit,
        created_at=created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        producer=_PRODUCERS[i % len(_PRODUCERS)],
        openlineage_run_id=f"{run[:8]}-{run[8:12]}-4{run[13:16]}-8{run[17:20]}-{run[20:32]}",
        otel_trace_id=_hex("trace", seed, i)[:32],
        artifact_uri=f"s3://kfm-registry/rollback-registry/artifacts/{commit}.tar.zst",
        data_snapshot=data_snapshot,
        models=models,
        configs=configs,
        checksums=Checksums(artifact_sha256=_hex("bundle", seed, i)),
        signatures=Signatures(in_toto=f"s3://kfm-registry/slsa/{commit}.attestation.json"),
        energy_carbon=EnergyCarbon(kwh=kwh, co2e_kg=round(kwh * 0.47, 3)),
    )


def sample_rows(count: int, start: int = 0, seed: int = 0) -> Iterator[Row]:
    """Rows ``start`` .. ``start + count - 1``."""
    for i in range(start, start + count):
        yield sample_row(i, seed)


def sample_jsonl(count: int, start: int = 0, seed: int = 0) -> bytes:
    """Those rows as JSONL input bytes."""
    return b"".join(encode_row(r) + b"\n" for r in sample_rows(count, start, seed))
