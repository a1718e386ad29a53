"""``kfm.toml``: the ledger's configuration file (resolvers, S3, attestation policy, energy, witnesses).

Found by ``--config FILE``, else the ``KFM_CONFIG`` environment variable, else ``<ledger>/kfm.toml``
for a local ledger (absent: every default).  Relative paths in the file (a trusted root, a key,
a ``[resolve]`` target directory) are relative to the file's own directory.  Every key is
documented in docs/supply-chain.md (resolve, s3, attestation, energy; s3 also in docs/s3.md), with an
example file (docs/kfm.example.toml).

Unknown sections and keys are errors, not ignored: a typo in a security policy must not
silently widen it.  Each error names the file, the key and what was found.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfm_ledger.errors import ConfigFileError, KfmError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
    "MAX_CONFIG_BYTES",
    "AttestationIdentity",
    "AttestationKey",
    "AttestationPolicy",
    "EnergyPolicy",
    "KfmConfig",
    "S3Settings",
    "WitnessEndpoint",
    "load_config",
    "parse_config",
    "resolve_config_path",
]

#: The environment variable naming the configuration file.
CONFIG_ENV = "KFM_CONFIG"
#: The configuration file's name inside a local ledger directory.
DEFAULT_CONFIG_NAME = "kfm.toml"
#: A configuration file larger than this is refused unread.
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class S3Settings:
    """``[s3]``: where the S3 endpoint is (else the standard ``AWS_*`` environment and files)."""

    endpoint_url: str | None = None
    region: str | None = None
    allow_http: bool | None = None


@dataclass(frozen=True)
class AttestationIdentity:
    """``[[attestation.identity]]``: a Sigstore signer accepted (issuer and SAN, exact or regex)."""

    issuer: str
    san: str | None = None
    san_regex: str | None = None
    source_repository: str | None = None
    source_ref: str | None = None


@dataclass(frozen=True)
class AttestationKey:
    """``[[attestation.key]]``: a public key (PEM, Ed25519 or ECDSA P-256) accepted for DSSE envelopes."""

    path: Path


@dataclass(frozen=True)
class AttestationPolicy:
    """``[attestation]``: how attestations are verified offline."""

    trusted_root: Path | None = None
    builders: tuple[str, ...] = ()
    identities: tuple[AttestationIdentity, ...] = ()
    keys: tuple[AttestationKey, ...] = ()


@dataclass(frozen=True)
class EnergyPolicy:
    """``[energy]``: plausibility range of kg CO2e per kWh (outside: a warning)."""

    co2e_per_kwh: tuple[float, float] = (0.0, 1.5)


@dataclass(frozen=True)
class WitnessEndpoint:
    """``[[witness]]``: a c2sp.org/tlog-witness the log sends its checkpoints to."""

    url: str
    vkey: str
    """The witness's verifier key text (``name+hash+base64``), read from the ``vkey`` file."""
    vkey_path: Path | None = None


@dataclass(frozen=True)
class KfmConfig:
    """The whole configuration; every section has defaults (an empty file is valid)."""

    path: Path | None = None
    resolve: Mapping[str, str] = field(default_factory=dict)
    s3: S3Settings = S3Settings()
    attestation: AttestationPolicy = AttestationPolicy()
    energy: EnergyPolicy = EnergyPolicy()
    witnesses: tuple[WitnessEndpoint, ...] = ()


_SECTIONS = frozenset({"resolve", "s3", "attestation", "energy", "witness"})


def resolve_config_path(explicit: str | os.PathLike[str] | None, ledger_dir: Path | None) -> Path | None:
    """The configuration file to use: ``--config``, else ``$KFM_CONFIG``, else ``<ledger>/kfm.toml`` if present."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    if ledger_dir is not None:
        candidate = ledger_dir / DEFAULT_CONFIG_NAME
        if candidate.is_file() and not candidate.is_symlink():
            return candidate
    return None


def load_config(path: Path | None) -> KfmConfig:
    """Read and check a configuration file (``None``: the defaults).

    A named file that is missing, not a regular file, larger than :data:`MAX_CONFIG_BYTES`,
    not TOML or not following the schema is a :class:`~kfm_ledger.errors.ConfigFileError`.
    """
    if path is None:
        return KfmConfig()
    from kfm_ledger.inputs import InputFileError, read_bounded

    try:
        data = read_bounded(path, MAX_CONFIG_BYTES, what="configuration file")
    except InputFileError as exc:
        raise ConfigFileError(str(exc), path=str(path)) from exc
    except OSError as exc:
        raise ConfigFileError(f"cannot read configuration file {path}: {exc.strerror or exc}", path=str(path)) from exc
    return parse_config(data, path)


def parse_config(data: bytes, path: Path | None = None) -> KfmConfig:
    """Parse configuration bytes; relative paths resolve against ``path``'s directory."""
    where = str(path) if path is not None else "<config>"
    try:
        text = data.decode("utf-8")
        doc = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{where}: not UTF-8 at byte {exc.start}", path=where) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{where}: not valid TOML: {exc}", path=where) from exc
    base = path.parent if path is not None else Path(".")
    unknown = sorted(set(doc) - _SECTIONS)
    if unknown:
        raise ConfigFileError(
            f"{where}: unknown section or key {unknown[0]!r} (known: {', '.join(sorted(_SECTIONS))})",
            path=where,
            key=unknown[0],
        )
    return KfmConfig(
        path=path,
        resolve=_resolve_section(doc.get("resolve", {}), where, base),
        s3=_s3_section(doc.get("s3", {}), where),
        attestation=_attestation_section(doc.get("attestation", {}), where, base),
        energy=_energy_section(doc.get("energy", {}), where),
        witnesses=_witness_section(doc.get("witness", []), where, base),
    )


def _table(value: Any, where: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigFileError(f"{where}: [{key}] must be a table, found {type(value).__name__}", path=where, key=key)
    return value


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str, section: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigFileError(
                f"{where}: unknown key {section}.{key} (known: {', '.join(sorted(allowed))})",
                path=where,
                key=f"{section}.{key}",
            )


def _string(table: Mapping[str, Any], key: str, where: str, section: str, *, required: bool = False) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise ConfigFileError(f"{where}: {section}.{key} is required", path=where, key=f"{section}.{key}")
        return None
    if not isinstance(value, str) or not value:
        raise ConfigFileError(
            f"{where}: {section}.{key} must be a non-empty string, found {value!r}", path=where, key=f"{section}.{key}"
        )
    return value


def _path(value: str, base: Path) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else base / p


_URI_RE = re.compile(r"^[a-z][a-z0-9+.-]*://")


def _resolve_section(value: Any, where: str, base: Path) -> dict[str, str]:
    table = _table(value, where, "resolve")
    out: dict[str, str] = {}
    for prefix, target in table.items():
        if not isinstance(target, str) or not target:
            raise ConfigFileError(
                f"{where}: resolve.{prefix!r} must map to a directory or URI prefix, found {target!r}",
                path=where,
                key=f"resolve.{prefix}",
            )
        if _URI_RE.match(target):
            out[prefix] = target
        else:
            local = str(_path(target, base))
            out[prefix] = local + "/" if target.endswith("/") and not local.endswith("/") else local
    return out


def _s3_section(value: Any, where: str) -> S3Settings:
    table = _table(value, where, "s3")
    _check_keys(table, {"endpoint_url", "region", "allow_http"}, where, "s3")
    allow = table.get("allow_http")
    if allow is not None and not isinstance(allow, bool):
        raise ConfigFileError(
            f"{where}: s3.allow_http must be true or false, found {allow!r}", path=where, key="s3.allow_http"
        )
    return S3Settings(
        endpoint_url=_string(table, "endpoint_url", where, "s3"),
        region=_string(table, "region", where, "s3"),
        allow_http=allow,
    )


def _attestation_section(value: Any, where: str, base: Path) -> AttestationPolicy:
    table = _table(value, where, "attestation")
    _check_keys(table, {"trusted_root", "builders", "identity", "key"}, where, "attestation")
    root = _string(table, "trusted_root", where, "attestation")
    builders = table.get("builders", [])
    if not isinstance(builders, list) or not all(isinstance(b, str) and b for b in builders):
        raise ConfigFileError(
            f"{where}: attestation.builders must be a list of builder ids, found {builders!r}",
            path=where,
            key="attestation.builders",
        )
    identities = []
    for n, item in enumerate(_array_of_tables(table.get("identity", []), where, "attestation.identity")):
        section = f"attestation.identity[{n}]"
        _check_keys(item, {"issuer", "san", "san_regex", "source_repository", "source_ref"}, where, section)
        san = _string(item, "san", where, section)
        san_regex = _string(item, "san_regex", where, section)
        if (san is None) == (san_regex is None):
            raise ConfigFileError(f"{where}: {section} needs exactly one of san, san_regex", path=where, key=section)
        if san_regex is not None:
            try:
                re.compile(san_regex)
            except re.error as exc:
                raise ConfigFileError(
                    f"{where}: {section}.san_regex is not a valid regular expression: {exc}",
                    path=where,
                    key=f"{section}.san_regex",
                ) from exc
        identities.append(
            AttestationIdentity(
                issuer=_string(item, "issuer", where, section, required=True) or "",
                san=san,
                san_regex=san_regex,
                source_repository=_string(item, "source_repository", where, section),
                source_ref=_string(item, "source_ref", where, section),
            )
        )
    keys = []
    for n, item in enumerate(_array_of_tables(table.get("key", []), where, "attestation.key")):
        section = f"attestation.key[{n}]"
        _check_keys(item, {"path"}, where, section)
        keys.append(AttestationKey(path=_path(_string(item, "path", where, section, required=True) or "", base)))
    return AttestationPolicy(
        trusted_root=_path(root, base) if root is not None else None,
        builders=tuple(builders),
        identities=tuple(identities),
        keys=tuple(keys),
    )


def _array_of_tables(value: Any, where: str, key: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigFileError(f"{where}: [[{key}]] must be an array of tables", path=where, key=key)
    return value


def _energy_section(value: Any, where: str) -> EnergyPolicy:
    table = _table(value, where, "energy")
    _check_keys(table, {"co2e_per_kwh"}, where, "energy")
    rng = table.get("co2e_per_kwh", [0.0, 1.5])
    if (
        not isinstance(rng, list)
        or len(rng) != 2
        or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in rng)
        or not 0 <= rng[0] <= rng[1] < float("inf")
    ):
        raise ConfigFileError(
            f"{where}: energy.co2e_per_kwh must be [low, high] with 0 <= low <= high, found {rng!r}",
            path=where,
            key="energy.co2e_per_kwh",
        )
    return EnergyPolicy(co2e_per_kwh=(float(rng[0]), float(rng[1])))


def _is_vkey_text(text: str) -> bool:
    """Whether ``text`` is a verifier key itself rather than a file name.  A key name is often a
    URL path (``witness.example/w1``) and base64 holds ``+`` and ``/``: only parsing tells."""
    from kfm_ledger.core.keys import Verifier

    try:
        Verifier.from_vkey(text)
    except KfmError:
        return False
    return True


def _witness_section(value: Any, where: str, base: Path) -> tuple[WitnessEndpoint, ...]:
    out = []
    for n, item in enumerate(_array_of_tables(value, where, "witness")):
        section = f"witness[{n}]"
        _check_keys(item, {"url", "vkey"}, where, section)
        url = _string(item, "url", where, section, required=True) or ""
        if not url.startswith(("http://", "https://")):
            raise ConfigFileError(
                f"{where}: {section}.url must be an http(s) URL, found {url!r}", path=where, key=f"{section}.url"
            )
        vkey_ref = _string(item, "vkey", where, section, required=True) or ""
        if _is_vkey_text(vkey_ref):
            out.append(WitnessEndpoint(url=url, vkey=vkey_ref.strip()))
            continue
        vkey_path = _path(vkey_ref, base)
        from kfm_ledger.inputs import MAX_KEY_FILE_BYTES, read_bounded

        try:
            text = read_bounded(vkey_path, MAX_KEY_FILE_BYTES, what="witness verifier key").decode("utf-8").strip()
        except (OSError, UnicodeDecodeError, KfmError) as exc:
            raise ConfigFileError(
                f"{where}: {section}.vkey: cannot read witness verifier key {vkey_path}: {exc}",
                path=where,
                key=f"{section}.vkey",
            ) from exc
        out.append(WitnessEndpoint(url=url, vkey=text, vkey_path=vkey_path))
    return tuple(out)
