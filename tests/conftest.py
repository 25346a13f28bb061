"""Shared fixtures.

``simulate(path_or_cfg, **kw)`` runs one simulation with the default invariant checkers
(page conservation and oom_lock mutual exclusion, checked after every event), so no
scenario test can pass on a run that broke the model's books.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from oomactors import sim
from oomactors.config import Config, load_config
from oomactors.invariants import default_checkers

ROOT = Path(__file__).resolve().parent.parent

# every simulation in this process and in the CLI subprocesses it starts checks the
# invariants after every event, not only the ones that ask for it
os.environ[sim.CHECK_ENV] = "1"

# tests/helpers.py is imported as a plain module by the test files
sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_checked(path_or_cfg: "str | Path | Config", **kw: Any) -> sim.RunResult:
    """Load (a path relative to the repository root, or absolute) and run with the default
    checkers, plus any ``checkers=`` given."""
    cfg = path_or_cfg if isinstance(path_or_cfg, Config) else load_config(ROOT / path_or_cfg)
    checkers = default_checkers() + list(kw.pop("checkers", None) or ())
    kw.setdefault("keep_records", True)  # scenario tests read every event
    result = sim.run(cfg, checkers=checkers, **kw)
    # the clock found every idle moment by its own count of running actors
    assert result.machine.sched.clock.repairs == 0
    return result


@pytest.fixture(scope="session")
def simulate():
    return run_checked
