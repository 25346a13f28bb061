"""The differential suite: each configs/vm/ scenario on Debian's 6.1 kernel in QEMU and in
the model calibrated from the guest; victims, their order and the counts must agree.

The scenarios boot two at a time (QEMU is a subprocess: threads overlap them on two
cores).  Each test also checks what the kernel did against what the scenario is built to
show, so an agreement on nothing (a workload that never ran) cannot pass.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from oomactors.config import load_config
from oomactors.vm.compare import compare

pytestmark = pytest.mark.vm
CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "vm"

# scenario -> (victims in order, panic message or None, overcommit refusals, memory.events
# counters that must be exactly so)
EXPECTED = {
    "global-adj-ties": (["grower"], None, 0, {}),
    "unkillable-panic": ([], "System is deadlocked on memory", 0, {}),
    "panic-on-oom": ([], "Out of memory: system-wide panic_on_oom is enabled", 0, {}),
    "overcommit-never": ([], None, 1, {}),
    "memcg-max": (["hog"], None, 0, {"/work": {"oom_kill": 1}}),
    "memcg-swap": (["hog"], None, 0, {"/work": {"oom_kill": 1}}),
    "oom-group": (["worker", "sidecar", "sidecar", "worker"], None, 0,
                  {"/job": {"oom_kill": 4, "oom_group_kill": 1}}),
    "memcg-high": ([], None, 0, {"/web": {"oom": 0, "oom_kill": 0, "max": 0}}),
    "cpuset-node": (["pinned"], None, 0, {}),
    "mempolicy-bind": (["leak1"], None, 0, {}),
    "allocating-task": (["small"], None, 0, {}),
    "fork-heavy": (["child"], None, 0, {}),
    "shmem-hog": (["shmhog"], None, 0, {}),
}
CONSTRAINT = {"memcg-max": "CONSTRAINT_MEMCG", "memcg-swap": "CONSTRAINT_MEMCG", "cpuset-node": "CONSTRAINT_CPUSET",
              "mempolicy-bind": "CONSTRAINT_MEMORY_POLICY", "global-adj-ties": "CONSTRAINT_NONE"}
# scenario -> why the model is known to differ (docs/vm.md "Simplifications"); none at present
XFAIL: dict[str, str] = {}


@pytest.fixture(scope="module")
def results() -> dict:
    def one(name: str):
        try:
            return compare(load_config(CONFIGS / f"{name}.toml"))
        except Exception as exc:  # noqa: BLE001 - reported by the test of that scenario
            return exc
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(EXPECTED, pool.map(one, EXPECTED)))


def test_every_scenario_has_a_config() -> None:
    assert sorted(p.stem for p in CONFIGS.glob("*.toml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=XFAIL[n]))
                                  if n in XFAIL else n for n in EXPECTED])
def test_kernel_and_model_agree(results: dict, name: str) -> None:
    data = results[name]
    if isinstance(data, Exception):
        raise data
    kernel = data["kernel"]
    victims, panic, refusals, memcg = EXPECTED[name]
    # what the kernel did is what the scenario is built to show ...
    assert [k["comm"] for k in kernel["kills"]] == victims
    assert kernel["panic"] == panic
    assert kernel["overcommit_refusals"] == refusals
    for path, want in memcg.items():
        got = kernel["memcgs"][path]["events"]
        assert {k: got[k] for k in want} == want
        # how often the memcg OOM path ran is timing (a retry while the victims exit
        # counts again): at least once for every kill scenario
        assert (got["oom"] >= 1) == (want.get("oom_kill", 0) > 0)
    if name in CONSTRAINT:
        assert {k["constraint"] for k in kernel["kills"]} == {CONSTRAINT[name]}
    assert data["calibration"]["reserved"] > 0
    # ... and the model agrees on the victims, their order and the counts
    assert data["differences"] == []
    assert data["agree"] is True
    model = data["model"]
    assert [k["comm"] for k in model["kills"]] == victims
    assert (model["panic"] is not None) == (panic is not None)


def test_the_fork_heavy_victim_is_the_last_child(results: dict) -> None:
    """Nine children of one name: the kernel and the model both kill the ninth (the big one)."""
    data = results["fork-heavy"]
    for side in ("kernel", "model"):
        assert [(k["comm"], k["instance"], k["of"]) for k in data[side]["kills"]] == [("child", 8, 9)]


def test_memory_high_throttled_in_both(results: dict) -> None:
    data = results["memcg-high"]
    assert data["kernel"]["memcgs"]["/web"]["events"]["high"] > 0
    assert data["model"]["memcgs"]["/web"]["events"]["high"] > 0
