"""Fuzzing what the network code reads from outside (hypothesis, bounded examples): the client's
handling of checkpoints (with cosignatures), tiles, entry bundles, lookup answers, gzip bodies and
error bodies; consistency checks over mutated tiles (never a false fork); the server's request
paths (never a 500 on a healthy ledger); the monitor's row checks.  Malformed input is a
KfmError, never another exception or a hang."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netutil import ORIGIN, StaticLog, sample_lines

from kfm_ledger.core.cosignature import CosignatureSigner
from kfm_ledger.core.keys import Signer
from kfm_ledger.core.note import add_signatures
from kfm_ledger.core.signed_checkpoint import open_checkpoint
from kfm_ledger.errors import ForkError, KfmError, NetworkError
from kfm_ledger.log.keys import load_signer
from kfm_ledger.log.ledger import Ledger
from kfm_ledger.net.consistency import reconcile
from kfm_ledger.net.http_client import Response, _gunzip, _server_message
from kfm_ledger.net.monitor import _Progress, _RowChecker
from kfm_ledger.net.remote import RemoteLog, WitnessPolicy
from kfm_ledger.net.server import LogApp
from kfm_ledger.net.state import OriginState
from kfm_ledger.sample import sample_jsonl

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
SIGNER = Signer.generate(ORIGIN)
WITNESS = CosignatureSigner.generate("witness.test/w")
LINES = sample_lines(300)
LOG = StaticLog(LINES, SIGNER)
OLD = StaticLog(LINES[:260], SIGNER)


class FakeFetcher:
    """A Fetcher over a dict (no sockets): what a server would answer."""

    base_url = "http://fuzz.test"

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def get(self, path: str, limit: int, *, accept_gzip: bool = False) -> Response:
        if path not in self.files:
            raise NetworkError(f"GET {self.url(path)}: HTTP 404", url=self.url(path), status=404)
        body = self.files[path]
        if len(body) > limit:
            raise NetworkError(f"GET {self.url(path)}: too long", url=self.url(path))
        return Response(200, body, "")


def remote(files: dict[str, bytes], quorum: int = 0) -> RemoteLog:
    return RemoteLog(FakeFetcher(files), SIGNER.verifier(), WitnessPolicy((WITNESS.verifier(),), quorum))  # type: ignore[arg-type]


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, inserted or deleted, or cut short."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        pos = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and out:
            del out[pos : pos + draw(st.integers(1, 8))]
        elif op == "cut":
            del out[pos:]
    return bytes(out)


COSIGNED = add_signatures(LOG.note, [WITNESS.cosign(open_checkpoint(LOG.note, [SIGNER.verifier()]).checkpoint.body(),
                                                    int(time.time()))])


@FUZZ
@given(st.one_of(st.binary(max_size=600), mutated(COSIGNED)))
def test_checkpoint_answers(data: bytes) -> None:
    try:
        signed, witnesses = remote({"checkpoint": data}, quorum=1).checkpoint()
    except KfmError:
        return
    assert signed.checkpoint.root == LOG.root and witnesses == ["witness.test/w"]


@FUZZ
@given(st.one_of(st.binary(max_size=3000), mutated(LOG.files["tile/entries/001.p/44"])))
def test_entry_bundle_answers(data: bytes) -> None:
    try:
        entries = remote({"tile/entries/001.p/44": data}).bundle(1, 300)
    except KfmError:
        return
    assert len(entries) == 44


@FUZZ
@given(st.sampled_from(["tile/0/001.p/44", "tile/1/000.p/1", "tile/entries/001.p/44", "tile/0/000"]), st.data())
def test_proven_entries_never_accept_a_wrong_answer(path: str, data: st.DataObject) -> None:
    files = dict(LOG.files)
    files[path] = data.draw(st.one_of(mutated(files[path]), st.binary(max_size=100)))
    r = remote(files)
    signed = r.open(LOG.note)
    try:
        proven = r.entry(290, signed)
    except KfmError:
        return
    assert proven.line == LINES[290]


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.builds(lambda v: json.dumps({"index": v}).encode(),
                                                    st.one_of(st.integers(), st.floats(), st.text(), st.none(),
                                                              st.booleans(), st.lists(st.integers())))))
def test_lookup_answers(data: bytes) -> None:
    try:
        index = remote({"lookup/abc": data}).lookup_index("abc")
    except KfmError:
        return
    assert isinstance(index, int) and index >= 0


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(gzip.compress(b"x" * 5000))))
def test_gzip_bodies(data: bytes) -> None:
    try:
        out = _gunzip(data, 4096, "http://fuzz.test/x")
    except KfmError:
        return
    assert len(out) <= 4096


def test_gzip_bomb_is_bounded() -> None:
    bomb = gzip.compress(b"\0" * (50 << 20))
    with pytest.raises(NetworkError, match="inflates past"):
        _gunzip(bomb, 1 << 20, "http://fuzz.test/x")


@FUZZ
@given(st.binary(max_size=500))
def test_error_bodies(data: bytes) -> None:
    text = _server_message(data)
    assert isinstance(text, str) and "\n" not in text


@FUZZ
@given(st.sampled_from(sorted(k for k in LOG.files if k.startswith("tile/") and "entries" not in k)), st.data())
def test_mutated_tiles_are_never_a_false_fork(tmp_path_factory: pytest.TempPathFactory, path: str,
                                              data: st.DataObject) -> None:
    state = OriginState(tmp_path_factory.mktemp("state"), ORIGIN)
    r = remote(dict(OLD.files))
    reconcile(r, state, r.open(OLD.note))
    files = dict(LOG.files)
    files[path] = data.draw(mutated(files[path]))
    r = remote(files)
    try:
        reconcile(r, state, r.open(LOG.note))
    except ForkError:  # pragma: no cover - the failure this test looks for
        pytest.fail(f"a mutated {path} was taken for a fork")
    except KfmError:
        return


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> LogApp:
    d = tmp_path_factory.mktemp("fuzzserve") / "ledger"
    led = Ledger.init(d, origin=ORIGIN)
    led.append(sample_jsonl(40), signer=load_signer((d / "log.key").read_bytes()))
    led.close()
    return LogApp(d)


PATH_PARTS = st.sampled_from(["/", "tile", "entries", "0", "1", "63", "64", "000", "x001", ".p", "40", "255", "..",
                              "%2e", "lookup", "proof", "checkpoints", "checkpoint", "log.key", "a", "\x00", "é", ""])


@FUZZ
@given(st.one_of(st.text(max_size=80).map(lambda t: "/" + t), st.lists(PATH_PARTS, max_size=8).map("/".join)))
def test_server_paths(app: LogApp, path: str) -> None:
    resp = app.handle("GET", path, len(path.encode("utf-8", "surrogatepass")))
    assert resp.status in (200, 400, 404, 409, 414), (path, resp.status, resp.body[:200])
    if resp.status != 200:
        assert json.loads(resp.body)["error"]["status"] == resp.status
    assert b"PRIVATE+KEY" not in resp.body


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(LINES[:5]), st.binary(max_size=300), mutated(LINES[0])), max_size=8))
def test_monitor_row_checks(tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]) -> None:
    progress = _Progress(Path(tmp_path_factory.mktemp("mon")) / "m.sqlite")
    checker = _RowChecker(progress)
    for i, line in enumerate(lines):
        checker.check(i, line)
    assert all(e.kind == "bad_row" and 0 <= e.fields["index"] < len(lines) for e in checker.events)
    progress.close()
