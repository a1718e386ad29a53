"""A hostile ledger directory: links and odd files planted inside a ledger are never followed.

Each test plants a symbolic link (to a file outside the ledger, or a folder outside it) at a
path a ledger holds, then runs what a user runs (open, get, prove, append, verify, recover,
mirror, rebuild); the outside file keeps its bytes and mode, and something refuses the path
with an error naming it.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from kfm_ledger.errors import KfmError, LedgerExistsError, StorageError
from kfm_ledger.log.keys import default_signer, load_signer, load_signer_file
from kfm_ledger.log.layout import (
    CHECKPOINT_KEY,
    EXPANSIONS_KEY,
    INDEX_FILE,
    JSONL_KEY,
    MIRROR_KEY,
    PENDING_KEY,
    SKEY_KEY,
    VKEY_KEY,
)
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl
from kfm_ledger.storage import LocalStorage
from kfm_ledger.storage.local import _TMP_NAME

ORIGIN = "example.com/hostile"
SECRET = b"an outside file the ledger must never read or write\n" * 20


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger with a full tile (so expansion records), a partial tile, kept checkpoints and a mirror."""
    from kfm_ledger.mirror.build import write_mirror

    d = tmp_path_factory.mktemp("hostile") / "ledger"
    led = Ledger.init(d, origin=ORIGIN)
    signer = load_signer((d / SKEY_KEY).read_bytes())
    led.append(sample_jsonl(260), signer=signer)
    led.append(sample_jsonl(3, start=260), signer=signer)
    write_mirror(led)
    led.close()
    return d


@pytest.fixture
def ledger(template: Path, tmp_path: Path) -> Path:
    d = tmp_path / "ledger"
    shutil.copytree(template, d)
    return d


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    f = tmp_path / "outside" / "victim"
    f.parent.mkdir()
    f.write_bytes(SECRET)
    f.chmod(0o600)
    return f


def _plant(ledger: Path, rel: str, target: Path) -> Path:
    p = ledger / rel
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.symlink_to(target)
    return p


def _exercise(ledger: Path, signer: object) -> list[str]:
    """Everything a user does to a ledger; the messages of what failed."""
    from kfm_ledger.mirror.build import write_mirror
    from kfm_ledger.verify.run import verify_ledger

    failures: list[str] = []

    def attempt(fn) -> None:  # type: ignore[no-untyped-def]
        try:
            result = fn()
        except (KfmError, OSError) as e:
            failures.append(str(e))
            return
        if hasattr(result, "ok") and not result.ok:
            failures.append(str(result.to_json()) if hasattr(result, "to_json") else repr(result))

    def session(op):  # type: ignore[no-untyped-def]
        def run():  # type: ignore[no-untyped-def]
            led = Ledger.open(ledger)
            try:
                return op(led)
            finally:
                led.close()

        return run

    attempt(session(lambda led: (led.get(led.entry(0, verified=False).row.lakefs_commit), led.tlog_proof(5))))
    attempt(session(lambda led: led.consistency_proof(200)))
    attempt(session(lambda led: led.append(sample_jsonl(1, start=300), signer=signer)))
    attempt(session(lambda led: verify_ledger(led)))
    attempt(session(lambda led: led.recover(signer)))  # type: ignore[arg-type]
    attempt(session(lambda led: write_mirror(led)))
    attempt(session(lambda led: led.rebuild()))
    attempt(lambda: default_signer(LocalStorage(ledger)))
    return failures


PLANTED = [
    CHECKPOINT_KEY,
    "checkpoints/263",
    "checkpoints/0",
    JSONL_KEY,
    INDEX_FILE,
    INDEX_FILE + "-wal",
    EXPANSIONS_KEY,
    PENDING_KEY,
    MIRROR_KEY,
    SKEY_KEY,
    VKEY_KEY,
    ".lock",
    "tile/0/000",
    "tile/0/001.p/7",
    "tile/1/000.p/1",
]


@pytest.mark.parametrize("rel", PLANTED)
def test_a_link_planted_at_a_ledger_file_is_never_followed(ledger: Path, outside: Path, rel: str) -> None:
    signer = load_signer((ledger / SKEY_KEY).read_bytes())
    link = _plant(ledger, rel, outside)
    failures = _exercise(ledger, signer)
    assert outside.read_bytes() == SECRET
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600
    # Still there: something must have refused it, naming it.  (The expansion records are
    # derived data whose every failure is swallowed, the tiles answering instead: refused
    # silently; see test_a_symlinked_expansion_store_is_refused_not_truncated.)
    if link.is_symlink() and rel != EXPANSIONS_KEY:
        assert any(str(link) in m for m in failures), failures
    assert not any(SECRET.decode()[:30] in m for m in failures)


@pytest.mark.parametrize("folder", ["tile", "tile/0", "tile/0/001.p", "checkpoints"])
def test_a_link_planted_at_a_ledger_folder_is_never_followed(ledger: Path, tmp_path: Path, folder: str) -> None:
    signer = load_signer((ledger / SKEY_KEY).read_bytes())
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(ledger / folder, elsewhere)  # the same files: only following the link would find them
    before = {p.name: p.read_bytes() for p in elsewhere.rglob("*") if p.is_file()}
    link = _plant(ledger, folder, elsewhere)
    failures = _exercise(ledger, signer)
    assert {p.name: p.read_bytes() for p in elsewhere.rglob("*") if p.is_file()} == before
    assert any(str(link) in m and "symbolic link" in m for m in failures), failures


def test_a_fifo_at_the_checkpoint_is_refused_without_hanging(ledger: Path) -> None:
    (ledger / CHECKPOINT_KEY).unlink()
    os.mkfifo(ledger / CHECKPOINT_KEY)
    done: list[BaseException] = []

    def run() -> None:
        try:
            Ledger.open(ledger)
        except BaseException as e:
            done.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert done and isinstance(done[0], StorageError), done
    assert "not a regular file" in str(done[0]) and str(ledger / CHECKPOINT_KEY) in str(done[0])


def test_a_symlinked_expansion_store_is_refused_not_truncated(ledger: Path, tmp_path: Path) -> None:
    """The issue's case: tile-expansions.bin -> a large outside file, then append and verify."""
    from kfm_ledger.verify.run import verify_ledger

    big = tmp_path / "big"
    big.write_bytes(os.urandom(588 * 1024))
    data = big.read_bytes()
    _plant(ledger, EXPANSIONS_KEY, big)
    signer = load_signer((ledger / SKEY_KEY).read_bytes())
    with pytest.raises(StorageError, match="symbolic link") as e:
        LocalStorage(ledger).append_log(EXPANSIONS_KEY)
    assert str(ledger / EXPANSIONS_KEY) in str(e.value)
    led = Ledger.open(ledger)
    try:
        led.append(sample_jsonl(300, start=300), signer=signer)  # a new full tile: records not stored
        report = verify_ledger(led, check_mirror=False)
        # Never followed, and verify names it (derived data: the tiles answered every proof).
        assert [f.where for f in report.failures] == [EXPANSIONS_KEY], report.failures
        assert "symbolic link" in report.failures[0].message and "kfm rebuild" in report.failures[0].message
        assert led.consistency_proof(10) and led.tlog_proof(0)
    finally:
        led.close()
    assert big.read_bytes() == data


def test_temporary_files_are_new_files_with_random_names(tmp_path: Path, outside: Path) -> None:
    """Links planted at the old predictable temporary names catch nothing."""
    store = LocalStorage(tmp_path / "s")
    store.write_atomic("x", b"0")
    for name in ("checkpoint", "log.key", "t"):
        _plant(tmp_path / "s", f".{name}.kfm-tmp.{os.getpid()}", outside)
    store.write_atomic("checkpoint", b"note")
    store.write_private("log.key", b"PRIVATE+KEY+x\n")
    store.write_once_many([(f"t{i}", b"tile") for i in range(70)])  # the bulk path too
    assert outside.read_bytes() == SECRET and stat.S_IMODE(outside.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "s" / "log.key").stat().st_mode) == 0o600
    left = [p.name for p in (tmp_path / "s").iterdir() if ".kfm-tmp." in p.name]
    assert all(p.is_symlink() for p in (tmp_path / "s").iterdir() if ".kfm-tmp." in p.name), left


def test_new_temporary_names_are_swept_like_the_old_ones() -> None:
    assert _TMP_NAME.match(".checkpoint.kfm-tmp.123.0a1b2c3d4e5f")
    assert _TMP_NAME.match(".checkpoint.kfm-tmp.123")
    assert not _TMP_NAME.match(".checkpoint.kfm-tmp.123.notHex")


def test_write_private_never_replaces_a_planted_link(tmp_path: Path, outside: Path) -> None:
    store = LocalStorage(tmp_path / "s")
    _plant(tmp_path / "s", "log.key", outside)
    with pytest.raises(StorageError, match="refusing to overwrite"):
        store.write_private("log.key", b"PRIVATE+KEY+x\n")
    assert outside.read_bytes() == SECRET and (tmp_path / "s" / "log.key").is_symlink()


def test_a_private_key_others_can_read_is_refused_with_the_fix(ledger: Path) -> None:
    key = ledger / SKEY_KEY
    key.chmod(0o640)
    with pytest.raises(StorageError, match=f"chmod 600 {key}"):
        default_signer(LocalStorage(ledger))
    key.chmod(0o600)
    assert default_signer(LocalStorage(ledger)).name == ORIGIN


def test_a_key_file_given_by_the_user(tmp_path: Path, ledger: Path) -> None:
    """--key FILE / KFM_KEY: a link the user names is followed (as ssh does), its target's mode checked."""
    key = tmp_path / "k" / "log.key"
    key.parent.mkdir()
    shutil.copy(ledger / SKEY_KEY, key)
    key.chmod(0o644)
    with pytest.raises(StorageError, match=f"chmod 600 {key}"):
        load_signer_file(key)
    key.chmod(0o600)
    link = tmp_path / "k" / "link.key"
    link.symlink_to(key)
    assert load_signer_file(link).name == ORIGIN
    fifo = tmp_path / "k" / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(StorageError, match="not a regular file"):
        load_signer_file(fifo)


def test_init_refuses_a_directory_it_did_not_create(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("someone's\n")
    with pytest.raises(StorageError, match="not empty") as e:
        Ledger.init(d, origin=ORIGIN)
    assert str(d) in str(e.value)
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]
    (d / "notes.txt").unlink()
    (d / "tile").symlink_to(tmp_path)
    with pytest.raises(StorageError, match="not empty"):
        Ledger.init(d, origin=ORIGIN)
    (d / "tile").unlink()
    Ledger.init(d, origin=ORIGIN).close()  # empty and ours: fine
    with pytest.raises(LedgerExistsError):
        Ledger.init(d, origin=ORIGIN)
    Ledger.init(tmp_path / "new" / "ledger", origin=ORIGIN).close()  # made by init: fine


def test_init_finishes_what_a_crashed_init_left(tmp_path: Path) -> None:
    d = tmp_path / "d"
    Ledger.init(d, origin=ORIGIN).close()
    for name in ("checkpoint", "index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        if (d / name).exists():
            (d / name).unlink()
    key = (d / SKEY_KEY).read_bytes()
    led = Ledger.init(d, origin=ORIGIN)
    assert led.verifier.vkey_text() == load_signer(key).verifier().vkey_text()
    led.close()


def test_a_long_lived_storage_sees_a_folder_removed_and_made_again(tmp_path: Path) -> None:
    a, b = LocalStorage(tmp_path / "s"), LocalStorage(tmp_path / "s")
    a.write_once("tile/0/000", b"x")
    assert a.read("tile/0/000") == b"x"
    shutil.rmtree(tmp_path / "s" / "tile")
    b.write_once("tile/0/000", b"y")
    assert a.read("tile/0/000") == b"y"
    a.write_once("tile/0/001", b"z")
    assert (tmp_path / "s" / "tile" / "0" / "001").read_bytes() == b"z"
