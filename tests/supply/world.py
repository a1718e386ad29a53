"""A small "supply world" for the deep-verification tests and the benchmark: a mirror directory
with bundles, key-signed DSSE attestations, STAC documents and configs, a ``kfm.toml`` mapping
the rows' ``s3://`` URIs to it, and rows that point at all of it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from kfm_ledger.config import KfmConfig, load_config
from kfm_ledger.sample import sample_commit, sample_row
from kfm_ledger.schema import Row
from kfm_ledger.schema.rows import Checksums, Config, DataSnapshot, EnergyCarbon, Signatures

from .helpers import new_key, signed_statement, write_public_pem

COLLECTION = {
    "type": "Collection", "stac_version": "1.0.0", "id": "kansas-hydro", "description": "Kansas hydrology",
    "license": "CC-BY-4.0", "links": [],
    "extent": {"spatial": {"bbox": [[-102.05, 36.99, -94.59, 40.0]]},
               "temporal": {"interval": [["2020-01-01T00:00:00Z", None]]}},
}
CONFIG_BYTES = b"pipeline: kfm\nretries: 3\n"


@dataclass
class World:
    root: Path
    key: Any
    config_path: Path
    configs_dir: Path

    @property
    def mirror(self) -> Path:
        return self.root / "mirror"

    def config(self) -> KfmConfig:
        return load_config(self.config_path)

    def artifact_path(self, commit: str) -> Path:
        return self.mirror / "registry" / "rollback-registry" / "artifacts" / f"{commit}.tar.zst"

    def attestation_path(self, commit: str) -> Path:
        return self.mirror / "registry" / "slsa" / f"{commit}.attestation.json"

    def row(self, i: int, *, artifact_bytes: int = 1024, seed: int = 0) -> Row:
        """Sample row ``i`` with a real artifact, attestation, STAC document and config."""
        base = sample_row(i, seed)
        commit = sample_commit(i, seed)
        data = hashlib.sha256(f"{seed}/{i}".encode()).digest() * (artifact_bytes // 32 + 1)
        data = data[:artifact_bytes]
        art = self.artifact_path(commit)
        art.parent.mkdir(parents=True, exist_ok=True)
        art.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        att = self.attestation_path(commit)
        att.parent.mkdir(parents=True, exist_ok=True)
        att.write_bytes(signed_statement(self.key, sha))
        return msgspec.structs.replace(
            base,
            data_snapshot=[DataSnapshot(stac="s3://kfm-stac/kansas-hydro/collection.json",
                                        lakefs_ref=f"lakefs://{base.lakefs_repo}@{commit}/stac/kansas-hydro")],
            configs=[Config(path="configs/pipeline.yaml", sha256=hashlib.sha256(CONFIG_BYTES).hexdigest())],
            checksums=Checksums(artifact_sha256=sha),
            signatures=Signatures(in_toto=f"s3://kfm-registry/slsa/{commit}.attestation.json"),
            energy_carbon=EnergyCarbon(kwh=2.0, co2e_kg=0.9),
        )


def make_world(root: Path, *, key_kind: str = "ed25519", extra_toml: str = "") -> World:
    root.mkdir(parents=True, exist_ok=True)
    mirror = root / "mirror"
    (mirror / "stac" / "kansas-hydro").mkdir(parents=True, exist_ok=True)
    (mirror / "stac" / "kansas-hydro" / "collection.json").write_text(json.dumps(COLLECTION))
    configs = root / "configs-root"
    (configs / "configs").mkdir(parents=True, exist_ok=True)
    (configs / "configs" / "pipeline.yaml").write_bytes(CONFIG_BYTES)
    key = new_key(key_kind)
    (root / "keys").mkdir(exist_ok=True)
    write_public_pem(key, root / "keys" / "ci.pub")
    cfg = root / "kfm.toml"
    cfg.write_text(
        "[resolve]\n"
        f'"s3://kfm-registry/" = "{mirror}/registry/"\n'
        f'"s3://kfm-stac/" = "{mirror}/stac/"\n'
        "[attestation]\n"
        "[[attestation.key]]\n"
        'path = "keys/ci.pub"\n' + extra_toml
    )
    return World(root, key, cfg, configs)
