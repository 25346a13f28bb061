"""Property-based testing of the OOM path: Hypothesis strategies, invariants, a pytest plugin.

* :mod:`oomactors.testing.strategies` -- Hypothesis strategies for whole configs
  (:func:`~oomactors.testing.strategies.configs`) and their parts (task groups, programs,
  memcg trees, GFP masks, oom_score_adj values), and for schedules
  (:func:`~oomactors.testing.strategies.schedules`).
* :mod:`oomactors.invariants` -- the checkers, by name in ``INVARIANTS``.
* :mod:`oomactors.testing.plugin` -- the pytest plugin (entry point ``pytest11``,
  loaded automatically once oomactors is installed): the ``oom_sim`` and
  ``oom_sim_async`` fixtures.

Hypothesis is not a runtime dependency of oomactors (install ``oomactors[testing]``).
Importing this package does not import it; the strategies module does, and the
plugin's fixtures work without it (only the ``hypothesis.note`` of a failure is lost).
"""

from __future__ import annotations

from typing import Any

_STRATEGIES = ("SIM_SETTINGS", "configs", "config_dicts", "machines", "kernels", "task_groups", "programs",
               "steps", "memcg_trees", "gfp_masks", "oom_score_adjs", "schedules")

__all__ = list(_STRATEGIES) + ["SimFailure", "run_checked"]


def __getattr__(name: str) -> Any:
    # lazily, so that ``import oomactors.testing`` (the plugin does) never needs Hypothesis
    if name in _STRATEGIES:
        from . import strategies
        return getattr(strategies, name)
    if name in ("SimFailure", "run_checked"):
        from . import plugin
        return getattr(plugin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
