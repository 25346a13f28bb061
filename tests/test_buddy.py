"""The buddy lists' bulk take (mmzone.Zone.take_pages_bulk) against a block-at-a-time model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from oomactors.kernel.mmzone import MAX_ORDER, Zone


def _zone(free_area: list[int]) -> Zone:
    z = Zone.__new__(Zone)  # only the buddy lists and their count are used
    z.free_area = list(free_area)
    z.nr_free = sum(c << o for o, c in enumerate(free_area))
    return z


def _one_block_at_a_time(free_area: list[int], n: int) -> list[int] | None:
    """rmqueue_bulk's outcome, a block at a time: whole blocks from the lowest order up;
    the first block larger than what is still wanted is split and its tail given back."""
    fa = list(free_area)
    if sum(c << o for o, c in enumerate(fa)) < n:
        return None
    for o in range(MAX_ORDER):
        while n >= 1 << o and fa[o]:
            fa[o] -= 1
            n -= 1 << o
        if not n:
            return fa
        if fa[o]:  # a block bigger than the rest of the request
            fa[o] -= 1
            tail = (1 << o) - n
            for k in range(o):
                if tail >> k & 1:
                    fa[k] += 1
            return fa
    raise AssertionError("unreachable: the lists held enough pages")


@settings(max_examples=400, deadline=None)
@given(free_area=st.lists(st.integers(0, 6), min_size=MAX_ORDER, max_size=MAX_ORDER),
       n=st.integers(0, 3000), whole=st.booleans(), less=st.integers(0, 3))
def test_take_pages_bulk_matches_taking_blocks_one_at_a_time(free_area, n, whole, less):
    z = _zone(free_area)
    if whole:  # all of it (the fragmentation set-up at boot takes every page), or nearly
        n = max(0, z.nr_free - less)
    before = z.nr_free
    expected = _one_block_at_a_time(free_area, n)
    assert z.take_pages_bulk(n) is (expected is not None)
    if expected is None:
        assert z.free_area == free_area and z.nr_free == before  # refused: nothing moved
    else:
        assert z.free_area == expected
        assert z.nr_free == before - n == sum(c << o for o, c in enumerate(z.free_area))
