"""The stepper's own shuffle (oomactors/stepper.py _shuffle) must be random.Random.shuffle:
the same order and the same draws, so a seed orders each batch as it did (pinned hashes)
and the controlled loop, which calls Random.shuffle, agrees with the plain one."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from oomactors.stepper import _shuffle


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**64), lengths=st.lists(st.integers(0, 300), min_size=1, max_size=8))
def test_the_stepper_shuffles_as_random_does(seed, lengths):
    ours, theirs = random.Random(seed), random.Random(seed)
    for n in lengths:
        a, b = list(range(n)), list(range(n))
        _shuffle(a, ours.getrandbits)
        theirs.shuffle(b)
        assert a == b
    assert ours.getrandbits(64) == theirs.getrandbits(64)  # the same draws were taken
