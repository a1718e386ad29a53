"""``kfm monitor`` over real sockets: rows checked as the log grows, a fork caught (with evidence),
bad rows (schema, duplicate commit, created_at going backwards) reported once, entries that do
not match the signed root refused, a rollback and a stale checkpoint reported."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from netutil import ORIGIN, ServerThread, StaticLog, sample_lines

from kfm_ledger.core.keys import Signer
from kfm_ledger.net.monitor import Event, Monitor, MonitorOptions
from kfm_ledger.sample import sample_commit


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate(ORIGIN)


def poll(url: str, signer: Signer, state: Path, **more) -> tuple[int, list[Event], Monitor]:
    events: list[Event] = []
    mon = Monitor(MonitorOptions(url=url, vkey=signer.verifier(), state_dir=state, timeout=5, **more), events.append)
    code = mon.run(once=True)
    return code, events, mon


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def test_rows_checked_as_the_log_grows(tmp_path: Path, signer: Signer) -> None:
    lines = sample_lines(600)
    with ServerThread(StaticLog(lines[:300], signer).app()) as server:
        code, events, _ = poll(server.url, signer, tmp_path)
    assert code == 0 and kinds(events) == ["checkpoint", "rows"]
    assert events[1].fields == {"start": 0, "stop": 300, "bad": 0}
    app = StaticLog(lines, signer).app()
    with ServerThread(app) as server:
        code, events, _ = poll(server.url, signer, tmp_path)
        assert code == 0 and kinds(events) == ["checkpoint", "rows"]
        assert events[0].fields["previous_size"] == 300 and events[1].fields["start"] == 300
        # Only the new rows' bundles were downloaded.
        assert [p for p in app.requests if "entries" in p] == ["/tile/entries/001", "/tile/entries/002.p/88"]
        code, events, _ = poll(server.url, signer, tmp_path)  # nothing new
        assert code == 0 and events == []
    db = sqlite3.connect(tmp_path / "net.kfm.test%2Flog" / "monitor.sqlite")
    assert db.execute("SELECT COUNT(*) FROM commits").fetchone() == (600,)
    db.close()


def _row(line: bytes, **changes: str) -> bytes:
    doc = json.loads(line)
    doc.update(changes)
    return json.dumps(doc, separators=(",", ":")).encode()


def test_bad_rows_are_reported(tmp_path: Path, signer: Signer) -> None:
    lines = sample_lines(40)
    lines[10] = lines[3]  # a second row for commit 3 (the same bytes; its created_at is older too)
    lines[20] = _row(lines[20], created_at="2020-01-01T00:00:00Z")  # before row 19
    lines[30] = b'{"not": "a row"}'
    lines[31] = lines[31].replace(b'{"lakefs_repo"', b'{ "lakefs_repo"')  # valid JSON, not canonical
    with ServerThread(StaticLog(lines, signer).app()) as server:
        code, events, _ = poll(server.url, signer, tmp_path, max_age=None)
        assert code == 1
        bad = [e for e in events if e.kind == "bad_row"]
        assert [(e.fields["index"], e.fields["rule"]) for e in bad] == [
            (10, "one_row_per_commit"), (10, "created_at_order"), (20, "created_at_order"), (30, "schema"),
            (31, "schema"),
        ]
        assert bad[0].fields["first_index"] == 3 and bad[0].fields["lakefs_commit"] == sample_commit(3)
        assert kinds(events)[-1] == "rows" and events[-1].fields["bad"] == 5
        # Reported once: the next poll has nothing to say.
        code, events, _ = poll(server.url, signer, tmp_path)
        assert code == 0 and events == []
    line = bad[2].to_json()
    assert json.loads(line)["event"] == "bad_row" and "\n" not in line


def test_fork_is_caught_with_evidence_and_stops_the_monitor(tmp_path: Path, signer: Signer) -> None:
    lines = sample_lines(300)
    with ServerThread(StaticLog(lines, signer).app()) as server:
        poll(server.url, signer, tmp_path)
    forked = list(lines)
    forked[5] = sample_lines(1, start=5, seed=9)[0]
    with ServerThread(StaticLog(forked + sample_lines(5, start=300), signer).app()) as server:
        events: list[Event] = []
        mon = Monitor(MonitorOptions(url=server.url, vkey=signer.verifier(), state_dir=tmp_path, interval=0.01),
                      events.append)
        code = mon.run(once=False, sleep=lambda s: None)  # a fork ends even the endless loop
    assert code == 1 and kinds(events) == ["fork"]
    evidence = Path(events[0].fields["evidence"])
    assert evidence.is_file() and json.loads(evidence.read_text())["reason"] == "inconsistent"


def test_entries_that_do_not_match_the_root_are_not_kept(tmp_path: Path, signer: Signer) -> None:
    lines = sample_lines(50)
    log = StaticLog(lines, signer)
    other = list(lines)
    other[7] = sample_lines(1, start=7, seed=4)[0]
    log.files["tile/entries/000.p/50"] = StaticLog(other, signer).files["tile/entries/000.p/50"]
    with ServerThread(log.app()) as server:
        code, events, _ = poll(server.url, signer, tmp_path)
        assert code == 1 and kinds(events) == ["checkpoint", "bad_data"]
        assert "do not hash to the signed root" in events[1].message
        log.files["tile/entries/000.p/50"] = StaticLog(lines, signer).files["tile/entries/000.p/50"]
        code, events, _ = poll(server.url, signer, tmp_path)  # nothing was kept: all 50 checked now
        assert code == 0 and events[-1].fields == {"start": 0, "stop": 50, "bad": 0}


def test_rollback_and_stale_checkpoint(tmp_path: Path, signer: Signer) -> None:
    lines = sample_lines(30)
    with ServerThread(StaticLog(lines, signer).app()) as server:
        assert poll(server.url, signer, tmp_path)[0] == 0
        code, events, _ = poll(server.url, signer, tmp_path, max_age=0.0)
        assert code == 1 and kinds(events) == ["stale"] and events[0].fields["max_age"] == 0.0
        code, events, _ = poll(server.url, signer, tmp_path, max_age=3600.0)
        assert code == 0
    with ServerThread(StaticLog(lines[:20], signer).app()) as server:
        code, events, _ = poll(server.url, signer, tmp_path)
    assert code == 1 and kinds(events) == ["rollback"]
    assert events[0].fields == {"stored_size": 30, "served_size": 20}


def test_unreachable_server_is_an_error_event(tmp_path: Path, signer: Signer) -> None:
    with ServerThread(StaticLog(sample_lines(3), signer).app()) as server:
        url = server.url
    code, events, _ = poll(url, signer, tmp_path)
    assert code == 1 and kinds(events) == ["error"] and events[0].fields["type"] == "NetworkError"


def test_another_key_is_bad_data(tmp_path: Path, signer: Signer) -> None:
    with ServerThread(StaticLog(sample_lines(3), Signer.generate(ORIGIN)).app()) as server:
        code, events, _ = poll(server.url, signer, tmp_path)
    assert code == 1 and kinds(events) == ["bad_data"] and events[0].fields["type"] == "UnknownKeyError"


def test_many_bad_rows_are_counted_not_listed(tmp_path: Path, signer: Signer, monkeypatch) -> None:
    import kfm_ledger.net.monitor as monitor_module

    monkeypatch.setattr(monitor_module, "MAX_ROW_EVENTS", 3)
    with ServerThread(StaticLog([b"{}"] * 10, signer).app()) as server:
        code, events, _ = poll(server.url, signer, tmp_path)
    assert code == 1 and kinds(events) == ["checkpoint"] + ["bad_row"] * 3 + ["bad_rows_truncated", "rows"]
    assert events[-2].fields == {"count": 7} and events[-1].fields["bad"] == 10


def test_witness_quorum_is_required_on_every_checkpoint(tmp_path: Path, signer: Signer) -> None:
    import time

    from kfm_ledger.core.cosignature import CosignatureSigner
    from kfm_ledger.core.note import add_signatures
    from kfm_ledger.core.signed_checkpoint import open_checkpoint

    witness = CosignatureSigner.generate("witness.test/m")
    log = StaticLog(sample_lines(10), signer)
    keys = (witness.verifier(),)
    with ServerThread(log.app()) as server:
        code, events, _ = poll(server.url, signer, tmp_path, witnesses=keys)
        assert code == 1 and kinds(events) == ["bad_data"] and events[0].fields["type"] == "QuorumError"
        body = open_checkpoint(log.note, [signer.verifier()]).checkpoint.body()
        log.files["checkpoint"] = add_signatures(log.note, [witness.cosign(body, int(time.time()))])
        code, events, _ = poll(server.url, signer, tmp_path, witnesses=keys)
        assert code == 0 and kinds(events) == ["checkpoint", "rows"]
