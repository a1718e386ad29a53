"""The fault-injection sweep on the S3 backend: an append with a fault at every request in turn.

Each request of an append (opening the ledger included) fails in turn, in each mode of
``faulty_client`` (an error before it is sent, a timeout, an answer lost after it landed),
and the faulted writer is dead from then on.  After each, the next writer (a fresh
client) appends another batch, and then: every acknowledged row is there exactly once,
the faulted batch is there whole or not at all, no staging object of the current tree or
an earlier one is left after ``recover``, and the ledger verifies.
"""

from __future__ import annotations

from collections import Counter

import pytest
from faulty_client import MODES, FaultyS3Client

from kfm_ledger.core.keys import Signer
from kfm_ledger.errors import KfmError
from kfm_ledger.log.remote import RemoteLedger
from kfm_ledger.log.remote_verify import verify_remote
from kfm_ledger.s3 import S3Client
from kfm_ledger.sample import sample_jsonl
from kfm_ledger.storage.s3 import S3Storage

ORIGIN = "test.kfm.example/s3-faults"
SIGNER = Signer.generate(ORIGIN)
LINES = sample_jsonl(300).splitlines()
BASE, FAULTED, NEXT = (0, 250), (250, 262), (262, 270)  # the faulted batch fills tile 0 and starts tile 1


def rows(span: tuple[int, int]) -> bytes:
    return b"".join(line + b"\n" for line in LINES[span[0] : span[1]])


@pytest.fixture(scope="module")
def template(s3_server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The objects of a ledger holding the base rows (copied into each case's fresh prefix)."""
    client = s3_server.client("t/fault-sweep-template")
    led = RemoteLedger.init(S3Storage(client, cache_dir=tmp_path_factory.mktemp("c")), origin=ORIGIN, signer=SIGNER)
    led.append(rows(BASE), signer=SIGNER)
    led.close()
    return {info.key: client.get(info.key) for info in client.list()}


def fresh(s3_server, template: dict[str, bytes], name: str) -> S3Client:
    client = s3_server.client(f"t/fault-sweep/{name}")
    for key, data in template.items():
        client.put(key, data)
    return client


def faulted_append(client: S3Client | FaultyS3Client, cache) -> bool:
    """Open and append the faulted batch; True when the append was acknowledged."""
    try:
        led = RemoteLedger.open(S3Storage(client, cache_dir=cache))  # type: ignore[arg-type]
        led.append(rows(FAULTED), signer=SIGNER, wait=5)
    except KfmError:
        return False
    return True


def clean_ops(s3_server, template: dict[str, bytes], tmp_path) -> list[str]:
    # A prefix of its own per test: objects an earlier count left would change the requests made.
    counting = FaultyS3Client(fresh(s3_server, template, f"count-{tmp_path.name}"))
    assert faulted_append(counting, tmp_path / "count-cache")
    return counting.ops


def test_the_sweep_covers_every_request_of_an_append(s3_server, template: dict[str, bytes], tmp_path) -> None:
    ops = clean_ops(s3_server, template, tmp_path)
    kinds = {op.split(" ", 1)[0] for op in ops}
    assert {"get", "head", "put", "put_if_absent", "put_if_match", "delete"} <= kinds, ops


@pytest.mark.parametrize(("mode", "crash"), [(m, True) for m in MODES] + [("lost", False)])
def test_an_append_with_a_fault_at_every_request_then_the_next_writer(
    s3_server, template: dict[str, bytes], tmp_path, mode: str, crash: bool
) -> None:
    """``crash=False``: the writer lives on after a lost answer (it must tell a swap it won from one it lost)."""
    ops = clean_ops(s3_server, template, tmp_path)
    for k in range(1, len(ops) + 1):
        name = f"{mode}-{crash}-{k}"
        client = fresh(s3_server, template, name)
        acked = faulted_append(FaultyS3Client(client, fail_at=k, mode=mode, crash=crash), tmp_path / f"{name}-a")
        nxt = RemoteLedger.open(S3Storage(client, cache_dir=tmp_path / f"{name}-b"))
        nxt.append(rows(NEXT), signer=SIGNER, wait=5)
        nxt.recover()
        report = verify_remote(nxt)
        assert report.ok, (name, ops[k - 1], report.failures)
        stored = Counter(nxt.iter_lines())
        assert all(n == 1 for n in stored.values()), (name, "a row twice")
        assert all(stored[line] == 1 for line in LINES[BASE[0] : BASE[1]] + LINES[NEXT[0] : NEXT[1]]), name
        present = {stored[line] for line in LINES[FAULTED[0] : FAULTED[1]]}
        assert len(present) == 1, (name, "the faulted batch is partly there")
        if acked:
            assert present == {1}, (name, "an acknowledged batch was lost")
        # Only a dead writer's staging object for a tree beyond the current one may stay (it is
        # removed once the tree passes its size: a writer may still be about to swap it in).
        left = [info.key for info in client.list("staging/")]
        assert all(int(key.split("/")[1].split("-")[0]) > nxt.size for key in left), (name, left)
        nxt.close()
