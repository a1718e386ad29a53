"""What a witness answers to one ``add-checkpoint`` request, given what it trusts and what it last
cosigned: the checks of c2sp.org/tlog-witness §add-checkpoint, in the spec's order.

Pure code: :func:`check_add_checkpoint` takes the request body, the trusted log keys and the
witness's stored state for the origin, and returns either an :class:`Answer` (an HTTP status
and body, nothing to store) or an :class:`Accepted` checkpoint to cosign and store.  Storing
atomically and locking are :mod:`.service`'s work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kfm_ledger.core import merkle
from kfm_ledger.core.checkpoint import Checkpoint
from kfm_ledger.core.keys import ALG_ED25519, Verifier
from kfm_ledger.core.note import open_note
from kfm_ledger.errors import KfmError, NoteError, ProofError, WitnessRequestError

from .protocol import CONTENT_TYPE_SIZE, AddCheckpointRequest, format_tlog_size, parse_add_checkpoint

__all__ = ["Accepted", "Answer", "LogState", "check_add_checkpoint", "check_request", "log_keys"]

TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class LogState:
    """What a witness keeps per log: the latest checkpoint it cosigned (size, root, and the note
    it returned: the log's signatures and its own cosignature)."""

    origin: str
    size: int
    root: bytes
    note: bytes


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, content type, body."""

    status: int
    body: bytes
    content_type: str = TEXT

    @classmethod
    def text(cls, status: int, message: str) -> Answer:
        return cls(status, (message.rstrip("\n") + "\n").encode("utf-8"))


@dataclass(frozen=True)
class Accepted:
    """A request that passed every check: cosign ``request.checkpoint`` and store it, provided
    the stored size is still ``expected_size`` (compare and swap)."""

    request: AddCheckpointRequest
    expected_size: int
    previous: LogState | None = None  #: the state the check saw (None: never cosigned)


def log_keys(trusted: Sequence[Verifier], origin: str) -> list[Verifier]:
    """The log's own keys (type 0x01, named like the origin) among the trusted keys."""
    return [v for v in trusted if v.alg == ALG_ED25519 and v.name == origin]


def check_add_checkpoint(
    body: bytes,
    trusted: Mapping[str, Sequence[Verifier]],
    load_state: Callable[[str], LogState | None],
) -> Accepted | Answer:
    """Decide an ``add-checkpoint`` request (tlog-witness §add-checkpoint).

    ``trusted``: origin -> the log's verifier keys.  ``load_state(origin)``: the latest
    checkpoint the witness cosigned for that origin, or None (never: size 0).  In order:

    1. a malformed body: 400;
    2. an unknown origin: 404;
    3. no signature from a trusted key, or a trusted key's signature fails: 403 (signatures
       from unknown keys are ignored, c2sp.org/signed-note §Signatures);
    4. the old size above the checkpoint's size: 400;
    5. the old size is not the size the witness last cosigned (0 if none): 409, body the stored
       size and a newline, ``text/x.tlog.size``;
    6. a size-0 checkpoint whose root is not the empty tree's; a proof given with old size 0; a
       consistency proof that does not verify (RFC 6962 §2.1.2 / RFC 9162 §2.1.4.2); the same
       size with another root: 422;
    7. otherwise :class:`Accepted`.
    """
    try:
        request = parse_add_checkpoint(body)
    except WitnessRequestError as e:
        return Answer.text(400, str(e))
    return check_request(request, trusted, load_state)


def check_request(
    request: AddCheckpointRequest,
    trusted: Mapping[str, Sequence[Verifier]],
    load_state: Callable[[str], LogState | None],
) -> Accepted | Answer:
    """Steps 2 to 7 of :func:`check_add_checkpoint` for a parsed request (a witness takes the
    origin's lock between parsing and this, so that the state read here is still the state
    when it stores the new one)."""
    checkpoint = request.checkpoint
    keys = log_keys(trusted.get(checkpoint.origin, ()), checkpoint.origin)
    if not keys:
        return Answer.text(404, f"unknown log origin {checkpoint.origin!r}")
    try:
        open_note(request.note, keys)
    except NoteError as e:
        return Answer.text(403, f"checkpoint signature does not verify with a trusted key: {e}")
    if request.old_size > checkpoint.size:
        return Answer.text(400, f"old size {request.old_size} is above the checkpoint's size {checkpoint.size}")
    state = load_state(checkpoint.origin)
    current = state.size if state is not None else 0
    if request.old_size != current:
        return Answer(409, format_tlog_size(current), CONTENT_TYPE_SIZE)
    problem = _consistency_problem(request, checkpoint, state)
    if problem is not None:
        return Answer.text(422, problem)
    return Accepted(request=request, expected_size=current, previous=state)


def _consistency_problem(request: AddCheckpointRequest, checkpoint: Checkpoint, state: LogState | None) -> str | None:
    """Why the checkpoint is not consistent with the stored state (422), or None."""
    if checkpoint.size == 0 and checkpoint.root != merkle.EMPTY_ROOT:
        return "a checkpoint of size 0 must have the empty tree's root (RFC 6962 §2.1: SHA-256 of nothing)"
    if request.old_size == 0:
        if request.proof:
            return f"old size 0 takes an empty consistency proof, got {len(request.proof)} line(s)"
        return None
    assert state is not None  # old_size == stored size > 0
    try:
        merkle.verify_consistency(state.size, checkpoint.size, state.root, checkpoint.root, request.proof)
    except ProofError as e:
        if state.size == checkpoint.size:
            return f"same size {checkpoint.size} as the cosigned checkpoint but not the same tree: {e}"
        return f"consistency proof from size {state.size} to {checkpoint.size} does not verify: {e}"
    except KfmError as e:  # pragma: no cover - verify_consistency raises ProofError only
        return f"consistency proof does not verify: {e}"
    return None
