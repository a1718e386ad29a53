"""The log side of witnessing: send the ledger's checkpoint to its witnesses and keep their
cosignatures with it (c2sp.org/tlog-witness §add-checkpoint, c2sp.org/tlog-cosignature).

For each ``[[witness]]`` of ``kfm.toml``, all at the same time (:func:`push_checkpoint`):

1. the old size is the largest size whose stored checkpoint carries a cosignature from that
   witness's key (0 if none): what it last cosigned, as far as the ledger knows;
2. the current checkpoint goes out with an RFC 9162 §2.1.4 consistency proof from the old size
   (built from the tiles); a 409 answer names the size the witness really holds, and the
   request is made again from it (at most :data:`MAX_ATTEMPTS` times); a witness holding a
   size above the ledger's is a fork or a rollback, and reported so;
3. the returned cosignatures, verified by the client, are added as extra signature lines to
   ``checkpoints/<size>`` and, while it is still that size, to ``checkpoint``
   (:func:`store_cosignatures`).

Storing keeps the ledger's invariants: under the writer lock; the note's text and the log's
own signature line stay byte for byte, only cosignature lines are added (one per witness key:
a note already holding a valid cosignature from that witness is not rewritten); each object is replaced whole
(``write_atomic``), ``checkpoints/<size>`` before ``checkpoint``; every reader of a checkpoint
ignores signature lines from keys it was not given (c2sp.org/signed-note §Signatures).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from kfm_ledger.config import WitnessEndpoint
from kfm_ledger.core.cosignature import verify_cosignature
from kfm_ledger.core.keys import Verifier
from kfm_ledger.core.note import NoteSignature, add_signatures, parse_note
from kfm_ledger.core.signed_checkpoint import open_checkpoint
from kfm_ledger.errors import KfmError, ObjectNotFoundError, WitnessError
from kfm_ledger.log.layout import CHECKPOINT_KEY, checkpoint_key
from kfm_ledger.log.ledger import Ledger

from .client import Conflict, Cosigned, WitnessClient

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_PARALLEL_PUSHES",
    "MAX_SCANNED_CHECKPOINTS",
    "PushResult",
    "last_cosigned_size",
    "push_checkpoint",
    "store_cosignatures",
]

#: Requests made to one witness for one checkpoint (the first, then one per 409 answer).
MAX_ATTEMPTS = 3
#: Witnesses asked at the same time by one push.
MAX_PARALLEL_PUSHES = 16
#: Stored checkpoints read, newest first, to find the size a witness last cosigned.
MAX_SCANNED_CHECKPOINTS = 64


@dataclass
class PushResult:
    """What one witness did with the checkpoint."""

    url: str
    witness: str  #: the witness key's name
    size: int  #: the checkpoint's tree size
    ok: bool = False
    old_size: int | None = None  #: the size the accepted proof started from
    timestamps: list[int] = field(default_factory=list)
    error: str | None = None
    status: int | None = None  #: the HTTP status of the refusal, if there was one

    def to_json(self) -> dict[str, object]:
        return {
            "url": self.url,
            "witness": self.witness,
            "tree_size": self.size,
            "ok": self.ok,
            "old_size": self.old_size,
            "timestamps": list(self.timestamps),
            "error": self.error,
            "status": self.status,
        }


def _has_cosignature(note: bytes, verifier: Verifier) -> bool:
    with contextlib.suppress(KfmError):
        return any((s.name, s.key_id) == (verifier.name, verifier.key_id) for s in parse_note(note).signatures)
    return False


def last_cosigned_size(ledger: Ledger, verifier: Verifier) -> int:
    """The largest signed size whose stored checkpoint carries a signature line from the witness
    key ``verifier`` (0 if none), among the latest :data:`MAX_SCANNED_CHECKPOINTS` signed sizes.
    Only a starting guess: the witness corrects it with 409, so a log with many checkpoints and
    a new witness costs one more request, not a read of every checkpoint."""
    if _has_cosignature(ledger.checkpoint.note, verifier):
        return ledger.size
    for size in reversed(ledger.checkpoint_sizes()[-MAX_SCANNED_CHECKPOINTS:]):
        try:
            note = ledger.storage.read(checkpoint_key(size))
        except ObjectNotFoundError:
            continue
        if _has_cosignature(note, verifier):
            return size
    return 0


def store_cosignatures(ledger: Ledger, size: int, verifier: Verifier, sigs: Sequence[NoteSignature]) -> bool:
    """Add the witness ``verifier``'s cosignatures ``sigs`` to ``checkpoints/<size>`` and, if it is
    still the latest, to ``checkpoint``; returns whether anything was written.

    Each cosignature is verified again over the stored note's text (BadSignatureError), and the
    stored note must verify with the log's key (it is never rewritten otherwise)."""
    with ledger.writer_lock(wait=60.0):
        key = checkpoint_key(size)
        kept = ledger.storage.read(key)
        open_checkpoint(kept, [ledger.verifier], origin=ledger.origin)  # the log's own note, or refused
        text = parse_note(kept).text
        for sig in sigs:
            verify_cosignature(verifier, text, sig)
        changed = _replace_with_more(ledger, key, kept, verifier, sigs)
        with contextlib.suppress(ObjectNotFoundError):
            published = ledger.storage.read(CHECKPOINT_KEY)
            if parse_note(published).text == text:
                changed = _replace_with_more(ledger, CHECKPOINT_KEY, published, verifier, sigs) or changed
        ledger.refresh()
        return changed


def _holds_valid_cosignature(note: bytes, verifier: Verifier) -> bool:
    parsed = parse_note(note)
    for sig in parsed.signatures:
        if (sig.name, sig.key_id) == (verifier.name, verifier.key_id):
            with contextlib.suppress(KfmError):
                verify_cosignature(verifier, parsed.text, sig)
                return True
    return False


def _replace_with_more(
    ledger: Ledger, key: str, note: bytes, verifier: Verifier, sigs: Sequence[NoteSignature]
) -> bool:
    """Replace ``key`` (holding ``note``) by the same note with ``sigs`` added (write_atomic).

    Only ever a superset of the signature lines: a note that already holds a valid cosignature
    from this witness is left as it is (so pushing the same checkpoint again never grows it); a
    line from the witness's key that does not verify is the one thing replaced."""
    if _holds_valid_cosignature(note, verifier):
        return False
    merged = add_signatures(note, sigs)
    if merged == note:
        return False
    # The same text, the log's signature still verifies: only cosignature lines changed.
    open_checkpoint(merged, [ledger.verifier], origin=ledger.origin)
    ledger.storage.write_atomic(key, merged)
    return True


def push_checkpoint(
    ledger: Ledger, witnesses: Sequence[WitnessEndpoint], *, timeout: float = 10.0
) -> list[PushResult]:
    """Send the ledger's latest checkpoint to every witness and store their cosignatures.

    The witnesses are asked at the same time (at most :data:`MAX_PARALLEL_PUSHES` requests in
    flight), so that a slow or unreachable one delays the others by nothing: an append with
    several witnesses waits for the slowest, not for their sum.  Only the HTTP requests run in
    other threads; every read and write of the ledger (the old size, the proofs, storing the
    cosignatures under the writer lock) is made here, one at a time.  Every witness is sent the
    same checkpoint: the latest when the push began, byte for byte as stored then (the log's
    signature and any cosignatures already kept; a witness ignores lines of keys it does not know).

    Never raises for one witness's failure: each :class:`PushResult` (in the order of
    ``witnesses``) says what happened (``ok``, ``error``, ``status``).  A bad witness key in the
    configuration is a result too."""
    ledger.refresh()
    signed = ledger.checkpoint
    pushes: list[_Push] = []
    results: list[PushResult] = []
    for endpoint in witnesses:
        try:
            verifier = Verifier.from_vkey(endpoint.vkey)
        except KfmError as e:
            results.append(PushResult(url=endpoint.url, witness="?", size=signed.checkpoint.size, error=str(e)))
            continue
        try:
            client = WitnessClient(endpoint.url, verifier, timeout=timeout)
        except KfmError as e:
            result = PushResult(url=endpoint.url, witness=verifier.name, size=signed.checkpoint.size)
            results.append(result)
            _failed(result, e)
            continue
        push = _Push(endpoint.url, client, signed.note, signed.checkpoint.size)
        pushes.append(push)
        results.append(push.result)
    if not pushes:
        return results
    pool = concurrent.futures.ThreadPoolExecutor(
        min(len(pushes), MAX_PARALLEL_PUSHES), thread_name_prefix="kfm-witness-push"
    )
    in_flight: dict[concurrent.futures.Future[Cosigned | Conflict], _Push] = {}

    def send(push: _Push, old: int | None = None) -> None:
        """The push's next request (``old``: the size a 409 named), or its end when there is none."""
        try:
            request = push.next_request(ledger, old)
        except KfmError as e:
            _failed(push.result, e)
            return
        in_flight[pool.submit(push.client.add_checkpoint, *request)] = push

    try:
        for push in pushes:
            send(push)
        while in_flight:
            done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                push = in_flight.pop(future)
                try:
                    answer = future.result()
                    if isinstance(answer, Conflict):
                        send(push, answer.size)
                        continue
                    store_cosignatures(ledger, push.size, push.client.verifier, answer.cosignatures)
                    push.result.ok, push.result.old_size = True, push.old
                    push.result.timestamps = list(answer.timestamps)
                except KfmError as e:
                    _failed(push.result, e)
    except BaseException:
        # Interrupted (Ctrl-C) or a bug: requests not yet sent are dropped and those in flight
        # cut off (their sockets shut down), not waited for.
        pool.shutdown(wait=False, cancel_futures=True)
        for push in pushes:
            push.client.abort()
        raise
    finally:
        pool.shutdown(wait=True)  # (no request in flight here but an aborted one, ending at once)
        for push in pushes:
            push.client.close()
    return results


class _Push:
    """One witness's part of :func:`push_checkpoint`: its client, the checkpoint, the size it
    was last shown to hold, and the requests made so far."""

    def __init__(self, url: str, client: WitnessClient, note: bytes, size: int) -> None:
        """``url``: the witness's as configured (the results name it so)."""
        self.client, self.note, self.size = client, note, size
        self.old = -1  # not looked up yet
        self.attempts = 0
        self.result = PushResult(url=url, witness=client.verifier.name, size=size)

    def next_request(self, ledger: Ledger, old: int | None) -> tuple[int, list[bytes], bytes]:
        """The arguments of the next ``add_checkpoint`` (c2sp.org/tlog-witness): the old size, an
        RFC 9162 §2.1.4 consistency proof from it, the checkpoint; WitnessError when there is
        none to make (a witness ahead of the ledger, or :data:`MAX_ATTEMPTS` made)."""
        if old is None:
            old = last_cosigned_size(ledger, self.client.verifier)
        elif self.attempts >= MAX_ATTEMPTS:
            raise WitnessError(
                f"witness {self.client.url} kept answering 409 (last: size {old}) after {MAX_ATTEMPTS} attempts",
                url=self.client.url, status=409, found=str(old),
            )
        if old > self.size:
            raise WitnessError(
                f"witness {self.client.url} has cosigned size {old} of this log, more than the ledger's {self.size}: "
                "the log was rolled back, or the witness was shown a fork; inspect before anything else",
                url=self.client.url, status=409, found=str(old),
            )
        self.old = old
        self.attempts += 1
        proof = ledger.consistency_proof(old, self.size) if 0 < old < self.size else []
        return old, proof, self.note


def _failed(result: PushResult, error: KfmError) -> None:
    """Record why a witness did not cosign: a witness's refusal with its HTTP status, else the error."""
    if isinstance(error, WitnessError):
        result.error, result.status = str(error), error.status
    else:
        result.error = error.diagnostics()
