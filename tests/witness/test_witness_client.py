"""The log's witness client against a witness that lies or breaks (a stdlib HTTP server on
127.0.0.1 answering what each test says), and fuzzing of the answer parsers: every bad answer
is a WitnessError naming the witness, never a traceback, never a stored cosignature."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wit_support import FakeLog

from kfm_ledger.core.cosignature import CosignatureSigner
from kfm_ledger.core.note import parse_note
from kfm_ledger.errors import FormatError, WitnessError
from kfm_ledger.witness.client import Conflict, Cosigned, WitnessClient
from kfm_ledger.witness.protocol import (
    MAX_RESPONSE_BYTES,
    format_signature_lines,
    parse_signature_lines,
    parse_tlog_size,
)

LOG = FakeLog("log.test/client")
NOTE = LOG.checkpoint(9)
TEXT = parse_note(NOTE).text
W = CosignatureSigner.generate("witness.test/client")


class Scripted(http.server.BaseHTTPRequestHandler):
    answer: tuple[int, str, bytes] = (200, "text/plain", b"")
    delay = 0.0
    seen: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).seen.append(self.rfile.read(length))
        time.sleep(self.delay)
        status, ctype, body = self.answer
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[Scripted]]]:
    handler = type("H", (Scripted,), {"seen": [], "delay": 0.0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/prefix", handler
    httpd.shutdown()
    httpd.server_close()


def test_good_answer_and_request_bytes(server: tuple[str, type[Scripted]]) -> None:
    url, h = server
    sig = W.cosign(TEXT, 1_800_000_000)
    other = CosignatureSigner.generate("witness.test/other").cosign(TEXT, 1)
    h.answer = (200, "text/plain", format_signature_lines([other, sig]))
    with WitnessClient(url, W.verifier()) as client:
        answer = client.add_checkpoint(3, LOG.proof(3, 9), NOTE)
    assert answer == Cosigned(cosignatures=(sig,), timestamps=(1_800_000_000,))  # the other key's line ignored
    assert h.seen[0].startswith(b"old 3\n") and h.seen[0].endswith(b"\n\n" + NOTE)


def test_409(server: tuple[str, type[Scripted]]) -> None:
    url, h = server
    h.answer = (409, "text/x.tlog.size", b"77\n")
    assert WitnessClient(url, W.verifier()).add_checkpoint(0, [], NOTE) == Conflict(77)
    h.answer = (409, "text/plain", b"77\n")
    with pytest.raises(WitnessError, match="content type"):
        WitnessClient(url, W.verifier()).add_checkpoint(0, [], NOTE)
    h.answer = (409, "text/x.tlog.size", b"seventy\n")
    with pytest.raises(WitnessError, match="409") as e:
        WitnessClient(url, W.verifier()).add_checkpoint(0, [], NOTE)
    assert e.value.status == 409


@pytest.mark.parametrize(
    "answer, message",
    [
        ((403, "text/plain", b"no trusted signature\n"), "refused the checkpoint: 403 no trusted signature"),
        ((500, "text/plain", b"x" * 1000), "refused the checkpoint: 500"),
        ((200, "text/plain", b""), "without valid signature lines"),
        ((200, "text/plain", b"hello\n"), "without valid signature lines"),
        ((200, "text/plain", format_signature_lines([W.cosign(TEXT.replace("9", "8", 1), 5)])), "does not verify"),
        ((200, "text/plain", format_signature_lines([CosignatureSigner.generate("witness.test/client").cosign(
            TEXT, 5)])), "no cosignature is from its key"),
        ((200, "text/plain", b"\xe2\x80\x94 x " + b"A" * (MAX_RESPONSE_BYTES + 10) + b"\n"), "more than"),
    ],
)
def test_bad_answers(server: tuple[str, type[Scripted]], answer: tuple[int, str, bytes], message: str) -> None:
    url, h = server
    h.answer = answer
    with pytest.raises(WitnessError, match=message) as e:
        WitnessClient(url, W.verifier()).add_checkpoint(0, [], NOTE)
    assert e.value.url == url + "/add-checkpoint"


def test_timeout_and_refused_connection(server: tuple[str, type[Scripted]], tmp_path: Path) -> None:
    url, h = server
    h.delay = 2.0
    h.answer = (409, "text/x.tlog.size", b"1\n")
    with pytest.raises(WitnessError, match="timed out"):
        WitnessClient(url, W.verifier(), timeout=0.3).add_checkpoint(0, [], NOTE)
    with pytest.raises(WitnessError, match="cannot reach"):
        WitnessClient("http://127.0.0.1:1", W.verifier(), timeout=2).add_checkpoint(0, [], NOTE)
    with pytest.raises(WitnessError, match="not an http"):
        WitnessClient("ftp://x", W.verifier())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_answer_parsers(data: bytes) -> None:
    for parse in (parse_signature_lines, parse_tlog_size):
        try:
            parse(data)
        except FormatError:
            pass
