"""The right edge, its deterministic extension and the staging object (kfm_ledger.log.staging): pure tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfm_ledger.core import merkle, tiles
from kfm_ledger.core.entry_bundle import decode_entry_bundle
from kfm_ledger.errors import FormatError, KfmError
from kfm_ledger.log.staging import Staging, TreeEdge, extend, staging_key


def entries(n: int, start: int = 0) -> list[bytes]:
    return [b'{"row":%d}' % i for i in range(start, start + n)]


def grow(sizes: list[int]) -> tuple[TreeEdge, dict[str, bytes], list[bytes]]:
    edge, objects, all_entries = TreeEdge.empty(), {}, []
    for n in sizes:
        new = entries(n, len(all_entries))
        ext = extend(edge, new)
        for key, data in ext.objects:
            assert objects.setdefault(key, data) == data, key  # never another value for a key
        objects.update(ext.objects)
        edge = ext.edge
        all_entries += new
        assert ext.root == edge.root()
    return edge, objects, all_entries


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=6))
def test_extend_gives_the_rfc9162_root_and_tlog_tiles(sizes: list[int]) -> None:
    edge, objects, all_entries = grow(sizes)
    tree = merkle.MemoryTree()
    for e in all_entries:
        tree.append(merkle.leaf_hash(e))
    assert edge.root() == tree.root() and edge.size == len(all_entries)
    edge.check_shape()
    # every full level-0 tile is the leaves' hashes; every full bundle the entries
    for n in range(len(all_entries) // tiles.TILE_WIDTH):
        chunk = all_entries[n * 256 : (n + 1) * 256]
        assert objects[tiles.tile_path(0, n)] == b"".join(merkle.leaf_hash(e) for e in chunk)
        assert decode_entry_bundle(objects[tiles.entries_path(n)], 256) == chunk


def test_the_same_entries_in_other_batches_give_the_same_objects() -> None:
    _, one, _ = grow([600])
    _, many, _ = grow([1, 255, 44, 300])
    full = {k: v for k, v in one.items() if ".p/" not in k}
    assert full == {k: v for k, v in many.items() if ".p/" not in k}
    assert one[tiles.tile_path(0, 2, 88)] == many[tiles.tile_path(0, 2, 88)]


def test_a_bad_edge_is_refused() -> None:
    edge, _, _ = grow([300])
    with pytest.raises(FormatError):
        TreeEdge(edge.size + 1, edge.partials, edge.bundle).check_shape()
    with pytest.raises(FormatError):
        TreeEdge(edge.size, edge.partials, edge.bundle[:-1] + (b"other",)).check_shape()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=300), min_size=0, max_size=3), st.integers(1, 40))
def test_staging_round_trip(sizes: list[int], n: int) -> None:
    edge, _, _ = grow(sizes)
    staged = Staging("note\n\n— x\n".encode(), edge, tuple(entries(n, 5000)))
    assert Staging.decode(staged.encode()) == staged


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_decode_refuses_garbage_with_a_format_error(tail: bytes) -> None:
    for data in (tail, b"kfm-staging/1\n" + tail):
        try:
            Staging.decode(data)
        except KfmError:
            pass


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 200), st.data())
def test_fuzz_a_truncated_or_extended_staging_object(cut: int, data: st.DataObject) -> None:
    edge, _, _ = grow([270])
    encoded = Staging(b"n", edge, tuple(entries(3))).encode()
    with pytest.raises(FormatError):
        Staging.decode(encoded[: max(0, len(encoded) - 1 - cut)])
    with pytest.raises(FormatError):
        Staging.decode(encoded + data.draw(st.binary(min_size=1, max_size=20)))


def test_staging_key_names_size_and_root() -> None:
    assert staging_key(12, b"\xab" * 32) == "staging/12-" + "ab" * 32
