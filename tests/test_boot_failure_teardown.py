"""A run that fails while the machine boots (a sink or checker raising at one of the first
events, a Ctrl-C then) still closes every actor it spawned: none is left for the garbage
collector to find never awaited (Python's RuntimeWarning), whatever the event."""

from __future__ import annotations

import gc
import warnings

import pytest

from oomactors import sim
from oomactors.config import load_config


class Boom(Exception):
    pass


@pytest.mark.parametrize("k", [1, 3, 5, 8, 10, 15, 20, 40])
def test_a_sink_raising_during_boot_leaves_no_actor_unclosed(k):
    cfg = load_config("configs/quickstart.toml")
    seen = [0]

    def sink(rec: tuple) -> None:
        seen[0] += 1
        if seen[0] == k:
            raise Boom()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Boom):
            sim.run(cfg, sinks=[sink])
        gc.collect()
    assert seen[0] == k, "the run stopped at the raising event"
    unclosed = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert unclosed == []
