"""The demo behind `kfm demo`: a ledger made, filled, proven and verified, step by step."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kfm_ledger.core.merkle import verify_consistency
from kfm_ledger.core.tlogproof import format_tlog_proof, verify_tlog_proof

from .log.keys import load_signer
from .log.layout import SKEY_KEY
from .log.ledger import Ledger
from .sample import sample_jsonl
from .verify import VerifyReport, verify_ledger

DEMO_ORIGIN = "demo.kfm.example/rollback-index"


@dataclass
class DemoResult:
    """What the demo did, and where its files are."""

    ledger: Path
    origin: str
    size: int
    root: bytes
    proof_file: Path
    entry_file: Path
    proven_index: int
    proven_commit: str
    consistency: tuple[int, int]
    report: VerifyReport
    steps: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "ledger": str(self.ledger),
            "origin": self.origin,
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "proof_file": str(self.proof_file),
            "entry_file": str(self.entry_file),
            "proven_index": self.proven_index,
            "proven_commit": self.proven_commit,
            "consistency": {"old_size": self.consistency[0], "new_size": self.consistency[1], "verified": True},
            "verify": self.report.to_json(),
            "steps": list(self.steps),
        }


def run_demo(
    directory: Path | None = None, *, rows: int = 100, say: Callable[[str], None] = lambda _: None
) -> DemoResult:
    """Create a ledger in ``directory`` (default: a new temporary one), append ``rows`` sample
    rows in two signed batches, prove one row's inclusion offline and the two tree heads'
    consistency, and verify everything.  ``say`` receives each step as it happens."""
    if rows < 2:
        raise ValueError("the demo needs at least 2 rows (two batches)")
    where = directory or Path(tempfile.mkdtemp(prefix="kfm-demo-"))
    where.mkdir(parents=True, exist_ok=True)
    steps: list[str] = []

    def step(text: str) -> None:
        steps.append(text)
        say(text)

    led = Ledger.init(where, origin=DEMO_ORIGIN)
    signer = load_signer(led.storage.read(SKEY_KEY))
    step(f"1. created ledger {where} (origin {led.origin}); signing key {where / 'log.key'} is mode 0600")
    first = rows // 2
    led.append(sample_jsonl(first), signer=signer)
    step(f"2. appended {first} rows; signed checkpoint size {led.size}, root {base64.b64encode(led.root).decode()}")
    old_size, old_root = led.size, led.root
    led.append(sample_jsonl(rows - first, start=first), signer=signer)
    step(f"3. appended {rows - first} more rows; signed checkpoint size {led.size}")
    entry = led.entry(led.size // 2)
    proof = format_tlog_proof(led.tlog_proof(entry.index))
    proof_file, entry_file = where / "proof.tlog-proof", where / "entry.json"
    proof_file.write_bytes(proof)
    entry_file.write_bytes(entry.line + b"\n")
    _, index = verify_tlog_proof(proof, entry.line, [led.verifier], origin=led.origin)
    step(
        f"4. inclusion proof for commit {entry.row.lakefs_commit[:12]}... (index {index}) verified offline "
        f"against the signed checkpoint; saved as {proof_file}"
    )
    verify_consistency(old_size, led.size, old_root, led.root, led.consistency_proof(old_size))
    step(f"5. consistency proof {old_size} -> {led.size} verified: the log only grew")
    report = verify_ledger(led)
    step(
        f"6. kfm verify: {'OK' if report.ok else 'FAILED'} ({report.rows_checked} rows, "
        f"{report.checkpoints_checked} signed checkpoints, {report.tiles_checked} tiles)"
    )
    result = DemoResult(
        ledger=where, origin=led.origin, size=led.size, root=led.root, proof_file=proof_file,
        entry_file=entry_file, proven_index=index, proven_commit=entry.row.lakefs_commit,
        consistency=(old_size, led.size), report=report, steps=steps,
    )
    led.close()
    return result
