"""Safe bundle extraction: checksum first, refusals leave nothing behind, configs checked."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from kfm_ledger.errors import VerificationError
from kfm_ledger.ops import bundle as bundle_mod
from kfm_ledger.ops.bundle import (
    BundleChecksumError,
    BundleError,
    BundleLimitError,
    ConfigMismatchError,
    UnsafeArchiveError,
    check_configs,
    extract_bundle,
    parse_size,
    verify_bundle_sha256,
)
from kfm_ledger.schema import Config

PIPELINE = b"pipeline: {steps: 3}\n"
MODEL = b"model: focus-transformer\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_member(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 1_700_000_000
    return info, data


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o777 if kind == tarfile.SYMTYPE else 0o644
    return info, None


def dir_member(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def make_tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def write_bundle(path: Path, members, *, frames: int = 1) -> str:
    """A .tar.zst of ``members`` (split in ``frames`` Zstandard frames); returns its sha256."""
    raw = make_tar(members)
    cctx = zstandard.ZstdCompressor(level=3)
    step = max(1, len(raw) // frames + 1)
    data = b"".join(cctx.compress(raw[i : i + step]) for i in range(0, len(raw), step))
    path.write_bytes(data)
    return sha(data)


def good_members():
    return [
        dir_member("./"),
        dir_member("./configs"),
        file_member("./configs/pipeline.yaml", PIPELINE),
        file_member("configs/model.yaml", MODEL),
        file_member("bin/run.sh", b"#!/bin/sh\necho run\n", 0o4755),
        file_member("data/empty.bin", b""),
    ]


def tree(root: Path) -> dict[str, object]:
    """Every path under ``root`` with its type and content (symlinks not followed)."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes())
    return out


@pytest.fixture
def area(tmp_path: Path):
    """tmp/work (DEST's parent, holding a neighbour file), tmp/outside (a target for escapes)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "neighbour.txt").write_text("keep me")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("original")
    return tmp_path


# ------------------------------------------------------------------ happy path


def test_extracts_files_and_checks_configs(area: Path) -> None:
    path = area / "b.tar.zst"
    digest = write_bundle(path, good_members())
    dest = area / "work" / "restore"
    configs = [
        Config(path="configs/pipeline.yaml", sha256=sha(PIPELINE)),
        Config(path="configs/model.yaml", sha256=sha(MODEL)),
    ]
    report = extract_bundle(path, dest, expected_sha256=digest, configs=configs)
    assert report.sha256 == digest
    assert report.files == 4
    assert report.bytes == len(PIPELINE) + len(MODEL) + len(b"#!/bin/sh\necho run\n")
    assert (dest / "configs" / "pipeline.yaml").read_bytes() == PIPELINE
    assert (dest / "data" / "empty.bin").read_bytes() == b""
    # set-uid dropped, executable kept
    assert stat.S_IMODE((dest / "bin" / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "configs" / "model.yaml").stat().st_mode) == 0o644
    assert int((dest / "configs" / "model.yaml").stat().st_mtime) == 1_700_000_000
    assert [c.status for c in report.configs] == ["ok", "ok"]
    assert report.to_json()["ok"] is True
    # nothing else appeared next to DEST (the staging directory is gone)
    assert sorted(p.name for p in (area / "work").iterdir()) == ["neighbour.txt", "restore"]


def test_multi_frame_zstd_and_existing_empty_dest(area: Path) -> None:
    path = area / "b.tar.zst"
    digest = write_bundle(path, good_members(), frames=3)
    dest = area / "work" / "restore"
    dest.mkdir()
    report = extract_bundle(path, dest, expected_sha256=digest)
    assert report.files == 4
    assert (dest / "configs" / "model.yaml").read_bytes() == MODEL


def test_verify_bundle_sha256(area: Path) -> None:
    path = area / "b.tar.zst"
    digest = write_bundle(path, good_members())
    check = verify_bundle_sha256(path, digest)
    assert check.sha256 == digest and check.size == path.stat().st_size
    wrong = sha(b"something else")
    with pytest.raises(BundleChecksumError) as e:
        verify_bundle_sha256(path, wrong)
    assert e.value.expected == wrong and e.value.found == digest
    assert isinstance(e.value, VerificationError)
    with pytest.raises(BundleError, match="cannot read"):
        verify_bundle_sha256(area / "missing.tar.zst", digest)
    with pytest.raises(BundleError, match="64 lower-case hex"):
        verify_bundle_sha256(path, "ABC")


# -------------------------------------------------------------------- refusals


def refused(area: Path, members, exc: type[Exception], match: str, **kw) -> Exception:
    """Extract a bundle of ``members``; it must raise ``exc`` and change nothing on disk."""
    path = area / "evil.tar.zst"
    digest = write_bundle(path, members)
    before = tree(area)
    dest = area / "work" / "restore"
    with pytest.raises(exc, match=match) as e:
        extract_bundle(path, dest, expected_sha256=kw.pop("expected", digest), **kw)
    assert tree(area) == before
    assert not dest.exists()
    return e.value


def test_wrong_sha256_writes_nothing(area: Path) -> None:
    err = refused(area, good_members(), BundleChecksumError, "sha256 mismatch", expected=sha(b"x"))
    assert err.expected == sha(b"x")  # type: ignore[attr-defined]


def test_absolute_path_refused(area: Path) -> None:
    target = str(area / "outside" / "victim.txt")
    members = [file_member("ok.txt", b"ok"), file_member(target, b"pwned")]
    err = refused(area, members, UnsafeArchiveError, "absolute path")
    assert err.member == target  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["../outside/victim.txt", "a/../../outside/victim.txt", "a/b/../../.."])
def test_dotdot_refused(area: Path, name: str) -> None:
    members = [file_member("ok.txt", b"ok"), file_member(name, b"pwned")]
    refused(area, members, UnsafeArchiveError, r"'\.\.' path component")


def test_symlink_out_refused(area: Path) -> None:
    members = [
        special_member("escape", tarfile.SYMTYPE, str(area / "outside")),
        file_member("escape/victim.txt", b"pwned"),
    ]
    refused(area, members, UnsafeArchiveError, "symbolic link")


def test_relative_symlink_refused_too(area: Path) -> None:
    refused(area, [special_member("up", tarfile.SYMTYPE, "../../outside")], UnsafeArchiveError, "links are not allowed")


def test_symlink_inside_refused_too(area: Path) -> None:
    # Links are refused altogether, even ones that stay inside DEST (documented policy).
    members = [file_member("a.txt", b"a"), special_member("b.txt", tarfile.SYMTYPE, "a.txt")]
    refused(area, members, UnsafeArchiveError, "symbolic link")


def test_hardlink_out_refused(area: Path) -> None:
    members = [special_member("hl", tarfile.LNKTYPE, str(area / "outside" / "victim.txt"))]
    refused(area, members, UnsafeArchiveError, "hard link")


@pytest.mark.parametrize(
    "kind, what", [(tarfile.CHRTYPE, "character device"), (tarfile.BLKTYPE, "block device"), (tarfile.FIFOTYPE, "FIFO")]
)
def test_devices_and_fifos_refused(area: Path, kind: bytes, what: str) -> None:
    refused(area, [file_member("ok.txt", b"ok"), special_member("dev", kind)], UnsafeArchiveError, what)


def test_oversize_refused(area: Path) -> None:
    members = [file_member("a.bin", b"x" * 600), file_member("b.bin", b"y" * 600)]
    err = refused(area, members, BundleLimitError, "exceed 1000 bytes", max_bytes=1000)
    assert err.member == "b.bin"  # type: ignore[attr-defined]


def test_too_many_members_refused(area: Path) -> None:
    members = [file_member(f"f{i}.txt", b"z") for i in range(5)]
    refused(area, members, BundleLimitError, "more than 3 members", max_files=3)


def test_duplicate_path_refused(area: Path) -> None:
    members = [file_member("a.txt", b"first"), file_member("./a.txt", b"second")]
    refused(area, members, UnsafeArchiveError, "duplicate path")


def test_backslash_and_drive_names_refused(area: Path) -> None:
    refused(area, [file_member("..\\evil.txt", b"x")], UnsafeArchiveError, "backslash")
    refused(area, [file_member("C:evil.txt", b"x")], UnsafeArchiveError, "drive-letter")


def test_not_an_archive(area: Path) -> None:
    path = area / "junk.tar.zst"
    path.write_bytes(b"definitely not zstd")
    before = tree(area)
    with pytest.raises(BundleError, match=r"not a valid \.tar\.zst"):
        extract_bundle(path, area / "work" / "restore", expected_sha256=sha(b"definitely not zstd"))
    assert tree(area) == before


def test_file_changed_during_extraction_is_refused(area: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = area / "b.tar.zst"
    digest = write_bundle(path, good_members())
    real_drain = bundle_mod._HashingReader.drain

    def drain_then_tamper(self) -> None:  # simulate bytes that differ on the second pass
        real_drain(self)
        self.hash.update(b"!")

    monkeypatch.setattr(bundle_mod._HashingReader, "drain", drain_then_tamper)
    before = tree(area)
    with pytest.raises(BundleChecksumError, match="while extracting"):
        extract_bundle(path, area / "work" / "restore", expected_sha256=digest)
    assert tree(area) == before


def test_dest_must_be_new_or_empty(area: Path) -> None:
    path = area / "b.tar.zst"
    digest = write_bundle(path, good_members())
    dest = area / "work" / "restore"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(BundleError, match="not empty"):
        extract_bundle(path, dest, expected_sha256=digest)
    assert [p.name for p in dest.iterdir()] == ["old.txt"]
    with pytest.raises(BundleError, match="parent"):
        extract_bundle(path, area / "nope" / "restore", expected_sha256=digest)
    assert not (area / "nope").exists()


# --------------------------------------------------------------------- configs


def test_config_mismatch_restores_nothing(area: Path) -> None:
    path = area / "b.tar.zst"
    digest = write_bundle(path, good_members())
    configs = [
        Config(path="configs/pipeline.yaml", sha256=sha(PIPELINE)),
        Config(path="configs/model.yaml", sha256=sha(b"another model")),
        Config(path="configs/absent.yaml", sha256=sha(b"absent")),
        Config(path="../etc/passwd", sha256=sha(b"p")),
    ]
    before = tree(area)
    with pytest.raises(ConfigMismatchError) as e:
        extract_bundle(path, area / "work" / "restore", expected_sha256=digest, configs=configs)
    assert tree(area) == before
    by_path = {c.path: c for c in e.value.checks}
    assert by_path["configs/pipeline.yaml"].status == "ok"
    assert by_path["configs/model.yaml"].status == "mismatch"
    assert by_path["configs/model.yaml"].expected == sha(b"another model")
    assert by_path["configs/model.yaml"].found == sha(MODEL)
    assert by_path["configs/absent.yaml"].status == "missing"
    assert by_path["../etc/passwd"].status == "unsafe"
    text = e.value.diagnostics()
    assert "configs/model.yaml: sha256 mismatch" in text and "configs/absent.yaml: missing" in text


def test_check_configs_does_not_follow_links(tmp_path: Path) -> None:
    (tmp_path / "real.yaml").write_bytes(PIPELINE)
    os.symlink(tmp_path / "real.yaml", tmp_path / "link.yaml")
    checks = check_configs(
        tmp_path, [Config(path="link.yaml", sha256=sha(PIPELINE)), Config(path="./real.yaml", sha256=sha(PIPELINE))]
    )
    assert [c.status for c in checks] == ["missing", "ok"]


# ----------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    "text, value",
    [
        ("1048576", 1048576), ("10GiB", 10 * 1024**3), ("500MB", 500_000_000),
        ("2k", 2000), ("3Mi", 3 * 1024**2), ("7b", 7),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "ten", "-5", "5XB", "1.5GB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(BundleError, match=f"^not a size: {re.escape(repr(text))} "):
        parse_size(text)
