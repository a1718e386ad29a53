"""A fault at every storage operation of an append, a bulk append, recovery and rebuild.

For each scenario a clean run over :class:`FaultyStorage` counts its storage
operations (N); then for k = 1..N, in each fault mode (an error before the
operation, a short append, the operation done but its answer lost), with and
without the "process" dying at the fault, the k-th operation fails.  Afterwards
the next writer opens the directory with the plain storage, recovers, and
``verify_ledger`` passes, every acknowledged row is present, the JSONL holds
exactly the signed rows, and a further append works.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from kfm_ledger.core.keys import Signer
from kfm_ledger.errors import KfmError
from kfm_ledger.log import bulk
from kfm_ledger.log.entries import read_entries, stored_bundles_beyond
from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.layout import CHECKPOINT_KEY, JSONL_KEY, SKEY_KEY
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.sample import sample_jsonl, sample_row
from kfm_ledger.schema import encode_row
from kfm_ledger.storage import LocalStorage, MemoryStorage
from kfm_ledger.storage.faulty import MODES, FaultyStorage, InjectedFault
from kfm_ledger.verify import verify_ledger

from conftest import ORIGIN, signer_of

BASE = 10  # rows in the ledger before the faulted operation
BATCH = 300  # crosses the first full tile: partial tiles replaced, an expansion record written
BULK = 600  # the bulk append: two full tiles and a partial one

Scenario = Callable[[Ledger, Path], int | None]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fault") / "ledger"
    led = Ledger.init(d, origin=ORIGIN)
    led.append(sample_jsonl(BASE), signer=signer_of(led))
    led.close()
    return d


@pytest.fixture(scope="module")
def bulk_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("bulk") / "rows.jsonl"
    p.write_bytes(sample_jsonl(BULK, start=BASE))
    return p


def _append(led: Ledger, _tmp: Path) -> int | None:
    led.append(sample_jsonl(BATCH, start=BASE), signer=signer_of_plain(led))
    return BASE + BATCH


def _bulk_append(led: Ledger, tmp: Path) -> int | None:
    led.append_file(tmp / "rows.jsonl", signer=signer_of_plain(led), workers=1)
    return BASE + BULK


def _recover(led: Ledger, _tmp: Path) -> int | None:
    led.recover()
    return None  # what recovery keeps is checked against the state it started from


def _rebuild(led: Ledger, _tmp: Path) -> int | None:
    led.rebuild()
    return None


_SIGNER: list[Signer] = []


def signer_of_plain(_led: Ledger) -> Signer:
    """The log's key, read once outside the faulted storage (the key file is not what is tested)."""
    return _SIGNER[0]


def _interrupted(template: Path, dest: Path, stop_at: str) -> Path:
    """A copy of the template whose append of BATCH rows died at the operation named ``stop_at``."""
    shutil.copytree(template, dest)
    fs = FaultyStorage(LocalStorage(dest))
    led = Ledger.open(fs)
    fs.arm(None)
    # Find the operation's number in a clean run on a scratch copy.
    scratch = dest.parent / (dest.name + "-scratch")
    shutil.copytree(template, scratch)
    sfs = FaultyStorage(LocalStorage(scratch))
    sled = Ledger.open(sfs)
    sfs.arm(None)
    sled.append(sample_jsonl(BATCH, start=BASE), signer=signer_of_plain(sled))
    sled.close()
    k = next(i for i, op in enumerate(sfs.ops, 1) if op.startswith(stop_at))
    fs.arm(k, "error", crash=True)
    try:
        led.append(sample_jsonl(BATCH, start=BASE), signer=signer_of_plain(led))
    except KfmError:
        pass  # a fault in the clean-up (steps 6 and 7) does not fail the published append
    led.close()
    assert fs.fault is not None
    if stop_at == "write_once_and_publish":
        # The checkpoint was kept as checkpoints/<n> but never published: the clean run's bytes
        # (signing is deterministic) stand in for what the crash left.
        key = f"checkpoints/{BASE + BATCH}"
        (dest / key).write_bytes((scratch / key).read_bytes())
    shutil.rmtree(scratch)
    return dest


RECOVERY_STATES = {
    "rows-unsynced": "sync rollback-index.jsonl",  # rows written, not durable, unsigned: rolled back
    "tiles-unwritten": "write_once_many",  # rows durable, unsigned: rolled back
    "bundles-unwritten": "write_once_many tile/entries/",  # tiles written, bundles not: rolled back
    "kept-not-published": "write_once_and_publish",  # signed: rolled forward
    "published-not-cleaned": "delete pending-append",  # published: the record and partials cleaned up
}


_STATES: dict[str, Path] = {}


def _start_state(kind: str, template: Path, tmp: Path) -> Path:
    """A copy of the state the scenario starts from (each state is built once)."""
    if kind not in _STATES:
        made = template.parent / f"state-{kind}"
        if kind in RECOVERY_STATES:
            _interrupted(template, made, RECOVERY_STATES[kind])
        else:
            shutil.copytree(template, made)
            if kind == "rebuild":
                led = Ledger.open(made)
                led.append(sample_jsonl(BATCH, start=BASE), signer=signer_of_plain(led))
                led.close()
        _STATES[kind] = made
    dest = tmp / "ledger"
    shutil.copytree(_STATES[kind], dest)
    return dest


SCENARIOS: dict[str, Scenario] = {
    "append": _append,
    "bulk": _bulk_append,
    "rebuild": _rebuild,
    **{kind: _recover for kind in RECOVERY_STATES},
}


def _check_after(d: Path, acked: int | None, floor: int, kind: str) -> None:
    """The next writer: plain storage, recover, verify, acknowledged rows present, append again."""
    led = Ledger.open(LocalStorage(d))
    try:
        led.recover()
        report = verify_ledger(led, lock_wait=5)
        assert report.ok, (kind, report.failures)
        assert led.size >= (acked or floor)
        jsonl = (d / JSONL_KEY).read_bytes()
        assert jsonl.count(b"\n") == led.size  # exactly the signed rows
        # The entry bundles are exactly the signed tree's (verify fails on any beyond it) and
        # give the signed rows back.
        assert stored_bundles_beyond(led.storage, led.size) == []
        assert read_entries(led, 0, led.size) == jsonl.split(b"\n")[:-1]
        for i in {0, floor - 1, led.size - 1}:
            assert led.entry(i).line == encode_row(sample_row(i))
        nxt = led.size
        led.append(sample_jsonl(2, start=nxt), signer=signer_of_plain(led))
        assert verify_ledger(led, lock_wait=5).ok
    finally:
        led.close()


def _floor(kind: str) -> int:
    """Rows that were acknowledged before the faulted run began."""
    if kind in ("rebuild", "kept-not-published", "published-not-cleaned"):
        return BASE + BATCH
    return BASE


def _run(
    kind: str, template: Path, tmp: Path, fail_at: int | None, mode: str, crash: bool
) -> tuple[FaultyStorage, int | None]:
    d = _start_state(kind, template, tmp)
    fs = FaultyStorage(LocalStorage(d))
    led = Ledger.open(fs)
    fs.arm(fail_at, mode, crash=crash)  # type: ignore[arg-type]
    acked: int | None = None
    try:
        acked = SCENARIOS[kind](led, tmp)
    except KfmError as e:
        if fail_at is None:
            raise
        # Only the injected fault (or what a storage error becomes) comes out, never another exception.
        assert fs.fault is not None, f"{kind}: {e!r} raised before the fault"
    finally:
        led.close()
    if fail_at is not None:
        assert fs.fault is not None or len(fs.ops) < fail_at
    _check_after(d, acked, _floor(kind), kind)
    return fs, acked


_CLEAN_OPS: dict[str, list[str]] = {}


@pytest.fixture(autouse=True)
def _bulk_streams_small_files(
    monkeypatch: pytest.MonkeyPatch, template: Path, bulk_input: Path, tmp_path: Path
) -> None:
    monkeypatch.setattr(bulk, "PARALLEL_THRESHOLD", 1)  # every JSONL file takes the streaming path
    if not _SIGNER:
        _SIGNER.append(load_signer((template / SKEY_KEY).read_bytes()))
    shutil.copy(bulk_input, tmp_path / "rows.jsonl")


def _clean_ops(kind: str, template: Path, tmp: Path) -> list[str]:
    if kind not in _CLEAN_OPS:
        shutil.copy(tmp / "rows.jsonl", tmp / "clean" / "rows.jsonl")
        fs, _acked = _run(kind, template, tmp / "clean", None, "error", False)
        _CLEAN_OPS[kind] = list(fs.ops)
        shutil.rmtree(tmp / "clean")
    return _CLEAN_OPS[kind]


@pytest.mark.parametrize("crash", [False, True], ids=["process-lives", "process-dies"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", list(SCENARIOS))
def test_a_fault_at_every_operation_leaves_a_ledger_that_recovers_and_verifies(
    kind: str, mode: str, crash: bool, template: Path, tmp_path: Path
) -> None:
    (tmp_path / "clean").mkdir()
    ops = _clean_ops(kind, template, tmp_path)
    assert ops
    # A short write differs from an error only for an append: the other operations are atomic.
    ks = [k for k, op in enumerate(ops, 1) if mode != "short" or op.startswith("append ")]
    faulted = 0
    for k in ks:
        run = tmp_path / f"k{k}"
        run.mkdir()
        shutil.copy(tmp_path / "rows.jsonl", run / "rows.jsonl")
        fs, _acked = _run(kind, template, run, k, mode, crash)
        faulted += fs.fault is not None
        shutil.rmtree(run)
    assert faulted == len(ks)  # every operation of the clean run was faulted once (the runs are deterministic)


def test_the_wrapper_counts_and_faults_as_documented() -> None:
    inner = MemoryStorage()
    fs = FaultyStorage(inner)
    log = fs.append_log("x")
    fs.arm(2, "short")
    log.append(b"abcd")
    with pytest.raises(InjectedFault):
        log.append(b"efgh")
    assert inner.read("x") == b"abcdef"
    fs.arm(1, "lost")
    with pytest.raises(InjectedFault):
        fs.write_atomic("k", b"v")
    assert inner.read("k") == b"v"
    fs.arm(1, "error", crash=True)
    with pytest.raises(InjectedFault):
        fs.write_atomic("k2", b"v")
    assert not inner.exists("k2")
    with pytest.raises(KfmError):
        fs.read("k")  # the process is dead
    assert fs.ops == ["write_atomic k2"]


def test_a_fault_on_memory_storage_too() -> None:
    """The wrapper over the memory backend (its own index location): an append faulted at every operation."""
    inner = MemoryStorage()
    led = Ledger.init(inner, origin=ORIGIN)
    signer = signer_of(led)
    led.append(sample_jsonl(BASE), signer=signer)
    snapshot = (dict(inner.objects), {k: bytearray(v) for k, v in inner._logs.items()})
    fs = FaultyStorage(inner)
    led = Ledger.open(fs)
    fs.arm(None)
    led.append(sample_jsonl(BATCH, start=BASE), signer=signer)
    n = len(fs.ops)
    for k in range(1, n + 1):
        for mode in MODES:
            inner.objects = dict(snapshot[0])
            inner._logs = {key: bytearray(v) for key, v in snapshot[1].items()}
            inner.crash(power_loss=False)  # the index cache is gone with the "process"
            fs.arm(None)
            led = Ledger.open(fs)
            fs.arm(k, mode, crash=True)  # type: ignore[arg-type]
            acked = False
            try:
                led.append(sample_jsonl(BATCH, start=BASE), signer=signer)
                acked = True
            except KfmError:
                assert fs.fault is not None
            inner.crash(power_loss=False)
            after = Ledger.open(inner)
            after.recover()
            assert verify_ledger(after).ok, (k, mode)
            assert after.size == BASE + BATCH if acked else after.size in (BASE, BASE + BATCH)
            assert inner.read(JSONL_KEY).count(b"\n") == after.size
            assert inner.read(CHECKPOINT_KEY)


@pytest.mark.parametrize("kind", ["append", "bulk", "rebuild"])
def test_the_sweep_reaches_the_entry_bundle_writes(kind: str, template: Path, tmp_path: Path) -> None:
    """The clean runs the sweep faults write entry bundles (so a fault lands on each of those writes)."""
    (tmp_path / "clean").mkdir()
    ops = _clean_ops(kind, template, tmp_path)
    writes = [op for op in ops if "tile/entries/" in op and not op.startswith(("exists", "read", "list"))]
    assert writes, ops
