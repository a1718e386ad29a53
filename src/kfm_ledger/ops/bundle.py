"""Rollback bundles: check a ``.tar.zst`` bundle's SHA-256 and extract it safely.

Every ledger row names one bundle, ``rollback-registry/artifacts/<lakefs_commit>.tar.zst``
(spec "Overview"), and records its SHA-256 in ``checksums.artifact_sha256``.  A bundle is
a tar archive (POSIX ustar/pax or GNU) compressed with Zstandard (RFC 8878), one or more
frames.

:func:`verify_bundle_sha256` streams the file and compares digests.

:func:`extract_bundle` restores a bundle into a directory, refusing anything unsafe.
The policy, in the order it is applied:

1. **Checksum first.**  The file's SHA-256 must equal the row's ``artifact_sha256``
   before a single byte is written anywhere.  The same open file is then read a second
   time for extraction and hashed again as it is read; if the two passes disagree (the
   file changed underneath us) the restore is refused.
2. **Staging.**  Members are written into a new temporary directory created next to
   DEST (in DEST's parent, so the final move is a same-filesystem ``rename``).  Only when
   every member passed every check (and, when ``configs`` are given, every config
   matched) is the staging directory renamed to DEST.  On any refusal the staging
   directory is removed: nothing is left in DEST and nothing outside it.  DEST must not
   exist, or be an empty directory; its parent must exist.
3. **Member rules** (checked for each member before anything of it is written):

   * only regular files and directories; **symbolic links and hard links are refused
     altogether**, whatever their target (a link cannot be checked against a checksum,
     and link-then-write tricks are the classic tar escape; bundles are built with
     links dereferenced), and so are character/block devices, FIFOs and any other type;
   * the name must be relative: no leading ``/``, no Windows drive or UNC prefix, no
     backslash, no NUL, and no ``..`` component; ``./`` prefixes are dropped;
   * a path may appear once (a second member with the same path is refused);
   * at most ``max_files`` members (directories included), and the regular files' sizes
     add up to at most ``max_bytes`` (checked from the header, before the data is
     written; the decompressed stream itself is capped too, so a decompression bomb of
     tar padding or pax headers is cut off);
   * as a second opinion, Python's ``tarfile.data_filter`` (PEP 706) must accept the
     member too.

   Files are written with ``O_CREAT | O_EXCL | O_NOFOLLOW``, mode ``0644`` (``0755`` if
   the archive marked them executable), directories ``0755``; owners, set-id bits and
   other metadata from the archive are not applied; file modification times are.

After extraction, :func:`check_configs` compares each ``configs[]`` entry of the row
with the extracted file.  **Assumption:** ``configs[].path`` is the config file's path
relative to the root of the bundle (``configs/pipeline.yaml`` is
``<DEST>/configs/pipeline.yaml``); no leading directory is stripped.  A config path that
is absolute or contains ``..`` is reported as ``unsafe``, never looked up.

Pure except for the file system work these functions are for; zstandard and tarfile
are imported lazily.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from ..errors import (
    BundleChecksumError,
    BundleError,
    BundleFileTooLargeError,
    BundleLimitError,
    ConfigMismatchError,
    UnsafeArchiveError,
)
from ..schema import Config

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "BundleCheck",
    "BundleChecksumError",
    "BundleError",
    "BundleFileTooLargeError",
    "BundleLimitError",
    "ConfigCheck",
    "ConfigMismatchError",
    "ExtractReport",
    "UnsafeArchiveError",
    "bundle_file_cap",
    "check_configs",
    "extract_bundle",
    "parse_size",
    "sha256_file",
    "verify_bundle_sha256",
]

#: Default cap on the total size of the regular files in a bundle (10 GiB).
DEFAULT_MAX_BYTES = 10 * 1024**3
#: Default cap on the number of members (files and directories) in a bundle.
DEFAULT_MAX_FILES = 100_000

_CHUNK = 1 << 20
# Slack for tar headers, padding and pax records on top of the file data when capping
# the decompressed stream: 512-byte header + up to 511 bytes padding per member, a
# pax/GNU long-name header pair per member at most, the two end-of-archive blocks and
# the 10 KiB record padding tar writers add.
_PER_MEMBER_OVERHEAD = 4 * 1024
_FIXED_OVERHEAD = 1 << 20


# ------------------------------------------------------------------- errors


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class BundleCheck:
    """The outcome of a bundle checksum check (only returned when it matched)."""

    path: str
    sha256: str  #: hex, as found (equal to the expected value)
    size: int  #: compressed file size in bytes

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "ok": True}


@dataclass(frozen=True)
class ConfigCheck:
    """One ``configs[]`` entry compared with the extracted file."""

    path: str
    expected: str  #: sha256 hex from the ledger row
    found: str | None  #: sha256 hex of the extracted file, None when missing/unsafe
    status: str  #: "ok", "mismatch", "missing" or "unsafe"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        if self.status == "ok":
            return f"{self.path}: ok"
        if self.status == "mismatch":
            return f"{self.path}: sha256 mismatch: expected {self.expected}, found {self.found}"
        if self.status == "missing":
            return f"{self.path}: missing from the bundle (expected sha256 {self.expected})"
        return f"{self.path}: unsafe path (absolute or with '..'); not looked up"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "expected_sha256": self.expected, "found_sha256": self.found, "status": self.status}


@dataclass(frozen=True)
class ExtractReport:
    """What :func:`extract_bundle` restored."""

    bundle: str  #: the bundle file
    dest: str  #: the directory it was restored into
    sha256: str  #: hex digest of the bundle (matched the expected one)
    members: int  #: members extracted (files and directories)
    files: int  #: regular files written
    bytes: int  #: bytes of file data written
    configs: tuple[ConfigCheck, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "dest": self.dest,
            "sha256": self.sha256,
            "members": self.members,
            "files": self.files,
            "bytes": self.bytes,
            "configs": [c.to_json() for c in self.configs],
            "ok": all(c.ok for c in self.configs),
        }


# ---------------------------------------------------------------- checksums


def bundle_file_cap(max_bytes: int, max_files: int = DEFAULT_MAX_FILES) -> int:
    """The most bytes a bundle file is hashed for: ``max_bytes`` plus the tar overhead the
    decompressed stream is allowed (an incompressible bundle is a little larger than its data)."""
    return max_bytes + max_files * _PER_MEMBER_OVERHEAD + _FIXED_OVERHEAD


def sha256_file(path: str | os.PathLike[str], max_bytes: int | None = None) -> tuple[bytes, int]:
    """(SHA-256 digest, size) of a regular file, streamed in 1 MiB chunks.

    A FIFO, a device or a directory is refused (:class:`BundleError`) without reading it;
    with ``max_bytes``, hashing stops past that many bytes (:class:`BundleLimitError`).
    """
    h = hashlib.sha256()
    size = 0
    with _open_bundle(os.fspath(path)) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
            _check_file_size(os.fspath(path), size, max_bytes)
    return h.digest(), size


def _open_bundle(bundle: str) -> IO[bytes]:
    from ..inputs import InputFileError, open_regular

    try:
        return open_regular(bundle, "bundle")
    except InputFileError as e:
        raise BundleError(str(e), path=bundle) from None


def _check_file_size(bundle: str, size: int, cap: int | None) -> None:
    if cap is not None and size > cap:
        raise BundleFileTooLargeError(
            bundle, "(bundle file)", f"the file is larger than {cap:,} bytes (--max-bytes plus tar overhead)"
        )


def _expected_digest(expected_sha256: str, path: str) -> bytes:
    if not re.fullmatch(r"[0-9a-f]{64}", expected_sha256):
        raise BundleError(f"expected sha256 must be 64 lower-case hex digits, got {expected_sha256!r}", path=path)
    return bytes.fromhex(expected_sha256)


def verify_bundle_sha256(
    path: str | os.PathLike[str],
    expected_sha256: str,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> BundleCheck:
    """Check a bundle file against ``checksums.artifact_sha256``.

    Returns the :class:`BundleCheck` when the digests are equal; raises
    :class:`BundleChecksumError` (expected vs found) when they are not, and
    :class:`BundleError` when the file cannot be read, is not a regular file, or is larger
    than :func:`bundle_file_cap` of ``max_bytes`` (:class:`BundleLimitError`; None: no cap).
    """
    expected = _expected_digest(expected_sha256, os.fspath(path))
    cap = None if max_bytes is None else bundle_file_cap(
        _check_limit(max_bytes, "max_bytes"), _check_limit(max_files, "max_files")
    )
    try:
        digest, size = sha256_file(path, cap)
    except OSError as e:
        raise BundleError(f"bundle {os.fspath(path)}: cannot read: {e.strerror or e}", path=os.fspath(path)) from None
    if digest != expected:
        raise BundleChecksumError(os.fspath(path), expected_sha256, digest.hex())
    return BundleCheck(path=os.fspath(path), sha256=digest.hex(), size=size)


# --------------------------------------------------------------- extraction


class _HashingReader:
    """A read-only file wrapper that hashes every byte read through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.hash.update(data)
        return data

    def readinto(self, buf: Any) -> int:  # pragma: no cover - zstandard uses read()
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


class _CappedReader:
    """Wraps the decompressed stream; refuses to yield more than ``cap`` bytes."""

    def __init__(self, raw: Any, cap: int, path: str) -> None:
        self._raw = raw
        self._cap = cap
        self._path = path
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        data = self._raw.read(n)
        self.count += len(data)
        if self.count > self._cap:
            raise BundleLimitError(
                self._path,
                "(archive stream)",
                f"decompressed stream exceeds {self._cap} bytes (--max-bytes plus tar overhead)",
            )
        return data


def _safe_name(name: str, path: str) -> str | None:
    """The member's normalised relative path, None for the archive root ("."), or refuse."""
    if not name:
        raise UnsafeArchiveError(path, name, "empty name")
    if "\x00" in name:
        raise UnsafeArchiveError(path, name, "NUL byte in name")
    if "\\" in name:
        raise UnsafeArchiveError(path, name, "backslash in name (Windows-style path)")
    if name.startswith("/"):
        raise UnsafeArchiveError(path, name, "absolute path")
    if re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(path, name, "drive-letter path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(path, name, "'..' path component")
    if not parts:
        return None
    return "/".join(parts)


def _check_limit(value: int, what: str) -> int:
    if value < 0:
        raise BundleError(f"{what} must be >= 0, got {value}", field=what, found=str(value))
    return value


def _check_dest(dest: Path) -> None:
    if dest.is_symlink():
        raise BundleError(f"restore directory {dest} is a symbolic link; give a real directory", path=str(dest))
    if dest.exists():
        if not dest.is_dir():
            raise BundleError(f"restore directory {dest} exists and is not a directory", path=str(dest))
        if any(dest.iterdir()):
            raise BundleError(
                f"restore directory {dest} is not empty; give a new or empty directory", path=str(dest)
            )
    parent = dest.parent
    if not parent.is_dir():
        raise BundleError(f"the parent of the restore directory ({parent}) does not exist", path=str(parent))


def extract_bundle(
    path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    expected_sha256: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    configs: Sequence[Config] | None = None,
) -> ExtractReport:
    """Verify a ``.tar.zst`` bundle's SHA-256, then extract it into ``dest`` safely.

    See the module docstring for the exact policy.  With ``configs`` (the row's
    ``configs[]``), each config is checked in the staging directory before anything is
    moved into ``dest``; a missing or different config raises
    :class:`ConfigMismatchError` and nothing is restored.

    Raises :class:`BundleChecksumError` (nothing written), :class:`UnsafeArchiveError` /
    :class:`BundleLimitError` (nothing left behind), :class:`BundleError` (unreadable
    file, bad DEST, corrupt archive).
    """
    import tarfile

    import zstandard

    bundle = os.fspath(path)
    expected = _expected_digest(expected_sha256, bundle)
    _check_limit(max_bytes, "max_bytes")
    _check_limit(max_files, "max_files")
    dest_path = Path(os.path.abspath(dest))
    _check_dest(dest_path)

    try:
        f = _open_bundle(bundle)
    except OSError as e:
        raise BundleError(f"bundle {bundle}: cannot read: {e.strerror or e}", path=bundle) from None
    with f:
        # Pass 1: the checksum, before anything is written (and no further than the limits allow).
        _check_checksum(f, bundle, expected, expected_sha256, bundle_file_cap(max_bytes, max_files))

        # Pass 2: extract into a staging directory next to DEST, hashing again.
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{dest_path.name}.kfm-restore-", dir=dest_path.parent))
        except OSError as e:
            raise BundleError(
                f"cannot create a staging directory in {dest_path.parent}: {e.strerror or e}",
                path=str(dest_path.parent),
            ) from None
        try:
            counts = _extract_to_staging(
                tarfile, zstandard, f, staging, bundle, expected, expected_sha256, max_bytes, max_files
            )
            checks: tuple[ConfigCheck, ...] = ()
            if configs is not None:
                checks = tuple(check_configs(staging, configs))
                if not all(c.ok for c in checks):
                    raise ConfigMismatchError(bundle, checks)
            _move_into_dest(staging, dest_path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    members, files, nbytes = counts
    return ExtractReport(
        bundle=bundle,
        dest=str(dest_path),
        sha256=expected_sha256,
        members=members,
        files=files,
        bytes=nbytes,
        configs=checks,
    )


def _check_checksum(f: IO[bytes], bundle: str, expected: bytes, expected_sha256: str, cap: int) -> None:
    """Pass 1: hash the whole bundle (at most ``cap`` bytes) and compare, then rewind ``f`` for pass 2."""
    h = hashlib.sha256()
    size = 0
    while chunk := f.read(_CHUNK):
        h.update(chunk)
        size += len(chunk)
        _check_file_size(bundle, size, cap)
    if h.digest() != expected:
        raise BundleChecksumError(bundle, expected_sha256, h.hexdigest())
    f.seek(0)


def _extract_to_staging(
    tarfile: Any,
    zstandard: Any,
    f: IO[bytes],
    staging: Path,
    bundle: str,
    expected: bytes,
    expected_sha256: str,
    max_bytes: int,
    max_files: int,
) -> tuple[int, int, int]:
    """Pass 2: decompress and extract ``f`` into ``staging`` within the limits, hashing the
    bytes read again; returns (members, files, bytes).  The caller removes ``staging`` on error."""
    hashing = _HashingReader(f)
    cap = max_bytes + max_files * _PER_MEMBER_OVERHEAD + _FIXED_OVERHEAD
    try:
        # zstandard only calls read() on its source: _HashingReader is file-like enough.
        stream = zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], hashing), read_size=_CHUNK, read_across_frames=True, closefd=False
        )
        capped = _CappedReader(stream, cap, bundle)
        counts = _extract_members(tarfile, capped, staging, bundle, max_bytes, max_files)
        hashing.drain()
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as e:
        raise BundleError(f"bundle {bundle}: not a valid .tar.zst archive: {e}", path=bundle) from None
    except OSError as e:
        raise BundleError(f"bundle {bundle}: extraction failed: {e}; nothing was restored", path=bundle) from None
    if hashing.hash.digest() != expected:
        raise BundleChecksumError(
            bundle, expected_sha256, hashing.hash.hexdigest(), when="while extracting (the file changed)"
        )
    return counts


def _move_into_dest(staging: Path, dest_path: Path) -> None:
    """Publish the checked staging directory as DEST in one rename."""
    try:
        os.chmod(staging, 0o755)  # mkdtemp made it 0700
        # rename(2) replaces an empty directory atomically and fails on a
        # non-empty one, so a DEST filled meanwhile is never merged into.
        os.rename(staging, dest_path)
    except OSError as e:
        raise BundleError(
            f"cannot move the restored files into {dest_path}: {e.strerror or e}; nothing was restored",
            path=str(dest_path),
        ) from None


def _extract_members(
    tarfile: Any, stream: Any, root: Path, bundle: str, max_bytes: int, max_files: int
) -> tuple[int, int, int]:
    """Extract every member of the tar stream into ``root``; returns (members, files, bytes)."""
    headers = members = files = total = 0
    seen: set[str] = set()
    data_filter = getattr(tarfile, "data_filter", None)
    root_real = os.path.realpath(root)
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            name = member.name
            headers += 1  # every member counts towards the limit, "./" included
            if headers > max_files:
                raise BundleLimitError(bundle, name, f"more than {max_files} members (--max-files)")
            if member.issym() or member.islnk():
                kind = "symbolic link" if member.issym() else "hard link"
                raise UnsafeArchiveError(
                    bundle, name, f"{kind} to {member.linkname!r}: links are not allowed in bundles"
                )
            if not (member.isreg() or member.isdir()):
                raise UnsafeArchiveError(
                    bundle, name, f"{_kind(member)}: only regular files and directories are allowed"
                )
            rel = _safe_name(name, bundle)
            if rel is None:  # the archive root, "./"
                continue
            members += 1
            if rel in seen:
                raise UnsafeArchiveError(bundle, name, "duplicate path in the archive")
            seen.add(rel)
            if member.isreg():
                if total + member.size > max_bytes:
                    raise BundleLimitError(
                        bundle,
                        name,
                        f"uncompressed size would exceed {max_bytes} bytes (--max-bytes): "
                        f"{total} so far + {member.size} for this member",
                    )
            if data_filter is not None:
                try:
                    data_filter(member, str(root))
                except tarfile.FilterError as e:
                    raise UnsafeArchiveError(bundle, name, f"refused by tarfile.data_filter: {e}") from None
            target = root / rel
            parent_real = os.path.realpath(target.parent)
            if os.path.commonpath([root_real, parent_real]) != root_real:
                raise UnsafeArchiveError(bundle, name, "path leaves the restore directory")
            try:
                if member.isdir():
                    target.mkdir(mode=0o755, parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                mode = 0o755 if member.mode & 0o111 else 0o644
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            except OSError as e:
                raise UnsafeArchiveError(bundle, name, f"cannot create it: {e.strerror or e}") from None
            src = tar.extractfile(member)
            written = 0
            with os.fdopen(fd, "wb") as out:
                if src is not None:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        out.write(chunk)
            if written != member.size:
                raise BundleError(
                    f"bundle {bundle}: member {name!r} is truncated ({written} of {member.size} bytes)", path=bundle
                )
            try:
                os.utime(target, (member.mtime, member.mtime))
            except (OSError, OverflowError, ValueError):
                pass
            files += 1
            total += written
    return members, files, total


def _kind(member: Any) -> str:
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "FIFO"
    return f"member of tar type {member.type!r}"


# ------------------------------------------------------------------ configs


def _config_rel(path: str) -> str | None:
    if not path or path.startswith("/") or "\\" in path or "\x00" in path or re.match(r"^[A-Za-z]:", path):
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def check_configs(root: str | os.PathLike[str], configs: Iterable[Config]) -> list[ConfigCheck]:
    """Compare each config's recorded sha256 with the file at ``root / config.path``.

    ``configs[].path`` is taken as relative to the bundle root (see the module
    docstring).  A path that resolves through a symbolic link is not followed (the
    extractor never creates links, so such a path is reported as missing).
    """
    root_path = Path(root)
    checks: list[ConfigCheck] = []
    for cfg in configs:
        rel = _config_rel(cfg.path)
        if rel is None:
            checks.append(ConfigCheck(cfg.path, cfg.sha256, None, "unsafe"))
            continue
        target = root_path / rel
        try:
            st = os.lstat(target)
        except OSError:
            checks.append(ConfigCheck(cfg.path, cfg.sha256, None, "missing"))
            continue
        if not stat.S_ISREG(st.st_mode):
            checks.append(ConfigCheck(cfg.path, cfg.sha256, None, "missing"))
            continue
        digest, _ = sha256_file(target)
        found = digest.hex()
        checks.append(ConfigCheck(cfg.path, cfg.sha256, found, "ok" if found == cfg.sha256 else "mismatch"))
    return checks


# ------------------------------------------------------------------- sizes

_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$")
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
          "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def parse_size(text: str) -> int:
    """Bytes from ``"10GiB"``, ``"500M"``, ``"1048576"`` (K/M/G/T = powers of 1000, Ki/Mi/Gi/Ti of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise BundleError(f"not a size: {text!r} (examples: 1048576, 500MB, 10GiB)", found=text)
    unit = (m.group(2) or "").lower()
    if unit.endswith("b") and unit != "b":
        unit = unit[:-1]
    return int(m.group(1)) * _UNITS[unit]
