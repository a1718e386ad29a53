"""The witness: checks a request (:mod:`.check`), cosigns, stores (:mod:`.state`), answers.

c2sp.org/tlog-witness §add-checkpoint requires that checking the old size and persisting the
new checkpoint be atomic.  Two layers make it so: one lock per origin in this process (requests
for one log are handled one at a time, requests for different logs in parallel), and the
compare-and-swap of :meth:`WitnessState.compare_and_swap` across processes (a request whose
origin another process moved meanwhile gets 409 with the new size, never a cosignature that
would roll the log back).  The state is committed before the 200 answer is returned.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from kfm_ledger.core.cosignature import CosignatureSigner
from kfm_ledger.core.keys import TIMESTAMP_SIZE, Verifier
from kfm_ledger.core.note import Note, NoteSignature, parse_note
from kfm_ledger.errors import KfmError, WitnessRequestError

from .check import TEXT, Accepted, Answer, LogState, check_request, log_keys
from .protocol import CONTENT_TYPE_SIZE, format_signature_lines, format_tlog_size, parse_add_checkpoint
from .state import WitnessState

__all__ = ["WitnessService", "origin_hash"]


def origin_hash(origin: str) -> str:
    """The lowercase hex SHA-256 of an origin: its path on the monitoring prefix
    (tlog-witness §Monitor Retrieval Mechanism)."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()


class WitnessService:
    """A witness with one cosigning key, the logs it follows, and its state.

    ``logs``: origin -> the log's verifier keys (type 0x01, named like the origin).
    ``clock``: POSIX seconds for the cosignature timestamps (tlog-cosignature §Format).
    """

    def __init__(
        self,
        signer: CosignatureSigner,
        logs: Mapping[str, Sequence[Verifier]],
        state: WitnessState,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = signer
        self.logs = {origin: tuple(log_keys(keys, origin)) for origin, keys in logs.items()}
        for origin, keys in self.logs.items():
            if not keys:
                raise ValueError(f"no Ed25519 log key named {origin!r} among the keys given for that origin")
        self.state = state
        self.clock = clock
        # One lock per configured origin, made up front: requests for unknown origins never
        # allocate anything.
        self._locks = {origin: threading.Lock() for origin in self.logs}
        self._by_hash = {origin_hash(origin): origin for origin in self.logs}

    def add_checkpoint(self, body: bytes) -> Answer:
        """Answer one ``POST add-checkpoint`` body (tlog-witness §add-checkpoint)."""
        try:
            request = parse_add_checkpoint(body)
        except WitnessRequestError as e:
            return Answer.text(400, str(e))
        origin = request.checkpoint.origin
        lock = self._locks.get(origin)
        if lock is None:
            return Answer.text(404, f"unknown log origin {origin!r}")
        with lock:
            decision = check_request(request, self.logs, self.state.load)
            if isinstance(decision, Answer):
                if decision.status == 422:
                    self.state.record_refusal(origin, decision.status, decision.body.decode(), bytes(body))
                return decision
            return self._cosign_and_store(decision)

    def _cosign_and_store(self, accepted: Accepted) -> Answer:
        request = accepted.request
        checkpoint = request.checkpoint
        # "The timestamp MUST NOT be zero"; and never before the last cosignature of this log:
        # a clock stepped back must not make a later statement look older than an earlier one.
        timestamp = max(1, int(self.clock()), self._last_timestamp(accepted.previous))
        note = parse_note(request.note)
        cosignature = self.signer.cosign(note.text, timestamp)
        keys = {(v.name, v.key_id) for v in self.logs[checkpoint.origin]}
        kept: list[NoteSignature] = [s for s in note.signatures if (s.name, s.key_id) in keys]
        stored = Note(text=note.text, signatures=(*kept, cosignature)).encode()
        new = LogState(origin=checkpoint.origin, size=checkpoint.size, root=checkpoint.root, note=stored)
        if not self.state.compare_and_swap(accepted.expected_size, new):
            # Another process moved this log first: its size is the one to prove from.
            current = self.state.load(checkpoint.origin)
            return Answer(409, format_tlog_size(current.size if current else 0), CONTENT_TYPE_SIZE)
        return Answer(200, format_signature_lines([cosignature]))

    def _last_timestamp(self, previous: LogState | None) -> int:
        """The timestamp of this witness's cosignature on the stored checkpoint (0 if none)."""
        if previous is None:
            return 0
        try:
            sigs = parse_note(previous.note).signatures
        except KfmError:
            return 0
        mine = [s for s in sigs if (s.name, s.key_id) == (self.signer.name, self.signer.key_id)]
        return max((int.from_bytes(s.signature[:TIMESTAMP_SIZE], "big") for s in mine), default=0)

    def monitoring_checkpoint(self, hex_hash: str) -> Answer:
        """``GET <monitoring prefix>/<origin hash>/checkpoint``: the latest checkpoint cosigned for
        that log, with the log's signatures and the witness's cosignature; 404 if none."""
        origin = self._by_hash.get(hex_hash)
        state = self.state.load(origin) if origin is not None else None
        if state is None:
            return Answer.text(404, "this witness has not cosigned a checkpoint for that log")
        return Answer(200, state.note, TEXT)
