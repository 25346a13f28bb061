"""Kill policies: the API, the built-ins, discovery (built-in, entry point, module:Name),
parameters from ``[policy]``, and policies that fail."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest
from helpers import events

from oomactors.config import parse_config
from oomactors.errors import ConfigError
from oomactors.trace.stream import read_trace
from policies import api
from policies.api import Abort, Kill, NothingKillable, OomContext, TaskView
from policies.lmk import LmkAdjLevels, LmkParams
from policies.registry import available, load_policy
from policies.simple import AllocatingTask, LargestRss, Youngest

ROOT = Path(__file__).resolve().parent.parent
CHOICE = "configs/policies-choice.toml"


def oomactors(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oomactors", *args], capture_output=True, text=True, cwd=cwd)


def first_victim(result) -> str:
    return events(result, "sim:oom_kill")[0]["comm"]


# --- the built-ins on one workload --------------------------------------------------------
@pytest.mark.parametrize("policy, victim", [
    ("linux", "app"),              # highest badness: cache's -500 costs it ~131k points
    ("largest-rss", "cache"),      # adj ignored: the biggest resident set
    ("youngest", "batch"),         # started last
    ("allocating-task", "grower"),  # the task whose allocation failed
    ("linux-2.6.36", "app"),
])
def test_each_builtin_policy_picks_its_victim(simulate, policy, victim):
    result = simulate(CHOICE, policy=load_policy(policy))
    assert first_victim(result) == victim
    # nobody ever kills the -1000 guard
    assert "guard" not in [k["comm"] for k in events(result, "sim:oom_kill")]


def test_the_victim_chosen_event_carries_the_policys_points(simulate):
    result = simulate(CHOICE, policy=load_policy("largest-rss"))
    chosen = events(result, "sim:oom_victim_chosen")[0]
    assert chosen["comm"] == "cache" and chosen["points"] == 450 * 256  # pages of RSS, adj ignored


def test_config_policy_table_selects_the_policy_and_its_parameters(simulate, tmp_path):
    text = (ROOT / CHOICE).read_text() + '\n[policy]\nname = "smallest-first"\nmin_rss_pages = 12800\n'
    cfg = parse_config(text, "choice+policy.toml")
    assert cfg.policy.name == "smallest-first" and cfg.policy.params == {"min_rss_pages": 12800}
    # batch (30MiB = 7680 pages) is below the floor: the smallest above it is the grower or app
    result = simulate(cfg)
    assert first_victim(result) not in ("batch", "guard")
    assert events(result, "sim:oom_victim_chosen")[0]["points"] >= 12800


@pytest.mark.parametrize("table, message", [
    ('name = "nope"', "choice.toml: policy.name: unknown policy 'nope' (available: "),
    ('name = "linux"\nx = 1', "choice.toml: policy.x: unknown key (the policy takes no parameters)"),
    ('name = "lmk-adj-levels"\nminfree = [1, 2]\nadj = [0]',
     "choice.toml: policy: minfree has 2 levels but adj has 1"),
    ('name = "lmk-adj-levels"\nminfree = ["a"]', "choice.toml: policy.minfree[0]: "),
    ('name = "smallest-first"\nmin_rss_pages = -1', "choice.toml: policy.min_rss_pages: "),
])
def test_bad_policy_tables_are_one_line_naming_the_key(table, message):
    with pytest.raises(ConfigError) as err:
        parse_config(f"[policy]\n{table}\n", "choice.toml")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


# --- discovery ---------------------------------------------------------------------------
def test_the_plugin_is_a_separately_installed_distribution():
    dist = distribution("oomactors-example-policy")
    names = {ep.name for ep in dist.entry_points if ep.group == "oomactors.policies"}
    assert names == {"smallest-first", "kill-unkillable"}
    listed = {p.name: p for p in available()}
    assert listed["smallest-first"].origin == "plugin (oomactors-example-policy)"
    assert listed["linux"].origin == "built-in"


def test_policies_command_lists_builtins_and_plugins():
    out = oomactors("policies", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    for name in ("linux", "linux-2.4", "linux-2.6.36", "linux-4.19", "allocating-task", "largest-rss",
                 "youngest", "lmk-adj-levels", "smallest-first"):
        assert rows[name]["description"], name
    assert rows["smallest-first"]["kind"] == "kernel"
    # the deliberately broken fixture declares itself test-only: a user's listing leaves it out
    assert "kill-unkillable" not in rows
    shown = {r["name"]: r for r in json.loads(oomactors("policies", "--json", "--test-only").stdout)}
    assert shown["kill-unkillable"]["origin"] == "plugin (oomactors-example-policy, test only)"


def test_run_uses_a_plugin_policy_by_its_entry_point_name():
    out = oomactors("run", CHOICE, "--policy", "smallest-first", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["kills"][0]["comm"] == "batch"
    assert summary["policy"] == "smallest-first" and summary["daemon"] is None


MY_POLICY = '''
from policies.api import Kill, KillPolicy, NothingKillable

class PickApp(KillPolicy):
    name = "pick-app"
    description = "always the task called app"

    def select(self, ctx):
        pending = self.pending_victim(ctx)
        if pending is not None:
            return pending
        mine = [t for t in ctx.killable() if t.comm == "app"] or ctx.killable()
        return Kill(mine[0].pid) if mine else NothingKillable()
'''


def test_run_uses_a_policy_from_the_users_own_module(tmp_path):
    (tmp_path / "mypolicy.py").write_text(MY_POLICY)
    out = oomactors("run", str(ROOT / CHOICE), "--policy", "mypolicy:PickApp", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["kills"][0]["comm"] == "app"


@pytest.mark.parametrize("spec, message", [
    ("nope", "oomactors: error: unknown policy 'nope' (available: "),
    ("mypolicy:Missing", "oomactors: error: policy 'mypolicy:Missing': mypolicy has no Missing"),
    ("no_such_module:X", "oomactors: error: policy 'no_such_module:X': cannot import no_such_module: "),
    ("mypolicy:NotAPolicy", "oomactors: error: policy 'mypolicy:NotAPolicy': NotAPolicy is neither a KillPolicy"),
])
def test_unloadable_policies_are_one_line_and_exit_2(tmp_path, spec, message):
    (tmp_path / "mypolicy.py").write_text(MY_POLICY + "\nclass NotAPolicy:\n    pass\n")
    out = oomactors("run", str(ROOT / CHOICE), "--policy", spec, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith(message) and out.stderr.count("\n") == 1


BROKEN = '''
from policies.api import Kill, KillPolicy

class Raises(KillPolicy):
    name = "raises"
    def select(self, ctx):
        raise RuntimeError("no idea")

class Stranger(KillPolicy):
    name = "stranger"
    def select(self, ctx):
        return Kill(4242)

class Nonsense(KillPolicy):
    name = "nonsense"
    def select(self, ctx):
        return "the big one"
'''


@pytest.mark.parametrize("cls, message", [
    ("Raises", "policy 'raises' raised RuntimeError: no idea"),
    ("Stranger", "policy 'stranger' chose pid 4242, which is not one of the 5 candidates of this OOM"),
    ("Nonsense", "policy 'nonsense' returned 'the big one': expected Kill, Abort or NothingKillable"),
])
def test_a_failing_policy_stops_the_run_naming_it_and_the_trace_stays_readable(tmp_path, cls, message):
    (tmp_path / "broken.py").write_text(BROKEN)
    trace = tmp_path / "run.trace"
    out = oomactors("run", str(ROOT / CHOICE), "--policy", f"broken:{cls}", "--trace", str(trace), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr == f"oomactors: error: {message}; trace so far in {trace}\n"
    recs = list(read_trace(trace).records())
    # the trace holds the run up to the OOM that asked the policy
    from oomactors.events import EVENT_ID
    assert any(r[1] == EVENT_ID["sim:out_of_memory_enter"] for r in recs)
    assert not any(r[1] == EVENT_ID["sim:oom_kill"] for r in recs)


# --- the built-ins on hand-made contexts -----------------------------------------------------
def view(pid: int, comm: str, rss: int, adj: int = 0, start: int = 0, flags: tuple = ()) -> TaskView:
    return TaskView(pid, pid, comm, oom_score_adj=adj, rss_anon=rss, start_time=start, flags=frozenset(flags))


def ctx_of(*tasks: TaskView, current: TaskView | None = None, free: int = 0, file: int = 0,
           fixes: dict | None = None) -> OomContext:
    return OomContext("CONSTRAINT_NONE", 100_000, 0, "GFP_KERNEL", 0, current or tasks[0], None, "linux-5.10",
                      tasks, free_pages=free, file_pages=file, fixes=fixes or {})


def test_pending_victim_guard_and_its_switches():
    victim = view(10, "dying", 500, flags=(api.OOM_VICTIM,))
    other = view(11, "other", 100)
    for policy in (LargestRss(), Youngest(), AllocatingTask(), LmkAdjLevels()):
        assert isinstance(policy.select(ctx_of(victim, other)), Abort)
    reaped = view(10, "dying", 500, flags=(api.OOM_VICTIM, api.OOM_SKIP))
    assert LargestRss().select(ctx_of(reaped, other)) == Kill(11, 100)
    # mmf_oom_skip off: a reaped victim still blocks the OOM killer
    assert isinstance(LargestRss().select(ctx_of(reaped, other, fixes={"mmf_oom_skip": False})), Abort)
    # pending_victim_abort off: nothing waits for the dying task
    assert LargestRss().select(ctx_of(victim, other, fixes={"pending_victim_abort": False})) == Kill(11, 100)


def test_simple_policies_skip_what_the_kernel_never_kills():
    tasks = (view(2, "pinned", 9000, adj=-1000), view(3, "vfork", 8000, flags=(api.IN_VFORK,)),
             view(4, "gone", 0, flags=(api.NO_MM,)), view(5, "small", 10, start=50))
    assert LargestRss().select(ctx_of(*tasks)) == Kill(5, 10)
    assert Youngest().select(ctx_of(*tasks)) == Kill(5, 10)
    assert LargestRss().select(ctx_of(*tasks[:3])) == NothingKillable()


def test_allocating_task_falls_back_to_the_kernels_choice():
    big, cur = view(2, "big", 9000), view(3, "cur", 10, adj=-1000)
    assert AllocatingTask().select(ctx_of(big, cur, current=cur)) == Kill(2, 9000)  # linux's points
    cur_ok = view(3, "cur", 10)
    assert AllocatingTask().select(ctx_of(big, cur_ok, current=cur_ok)) == Kill(3, 10)


def test_lmk_levels_pick_the_highest_adj_then_the_largest():
    tasks = (view(2, "fg", 9000, adj=0), view(3, "cached_a", 100, adj=900), view(4, "cached_b", 300, adj=900),
             view(5, "prev", 5000, adj=700))
    lmk = LmkAdjLevels(LmkParams(minfree=(1000, 2000, 4000), adj=(900, 700, 0)))
    # free and file both under the first level: floor 900, the larger cached app dies
    assert lmk.select(ctx_of(*tasks, free=500, file=500)) == Kill(4, 300)
    # file pages above the first two levels: floor 0, still the highest adj first
    assert lmk.select(ctx_of(*tasks, free=500, file=3000)) == Kill(4, 300)
    # nobody at or above the floor: the kernel's own choice (the largest, fg)
    assert lmk.select(ctx_of(tasks[0], free=500, file=500)) == Kill(2, 9000)
    # memory above every level: the driver kills nobody; the kernel's choice again, which
    # counts adj 900 as 900 * totalpages/1000 = 90000 pages
    assert lmk.select(ctx_of(*tasks, free=5000, file=5000)) == Kill(4, 300 + 90_000)


# --- the plugin through compare and explore -------------------------------------------------
def test_compare_uses_a_plugin_policy():
    out = oomactors("compare", CHOICE, "--policy", "linux", "--policy", "smallest-first", "--seeds", "1", "--json")
    assert out.returncode == 0, out.stderr
    rows = {p["policy"]: p for p in json.loads(out.stdout)["configs"][0]["policies"]}
    assert [k["comm"] for k in rows["smallest-first"]["runs"][0]["killed"]][:1] == ["batch"]
    assert [k["comm"] for k in rows["linux"]["runs"][0]["killed"]][:1] == ["app"]


def test_explore_catches_the_broken_plugin_that_kills_an_unkillable_task(tmp_path):
    out = tmp_path / "repro.json"
    p = oomactors("explore", CHOICE, "--check", "no_unkillable_killed", "--policy", "kill-unkillable",
                  "--budget", "3", "--out", str(out), "--json")
    assert p.returncode == 1, p.stderr
    result = json.loads(p.stdout)["result"]
    assert result["invariant"] == "no_unkillable_killed" and "guard" in result["message"]
    # the reproducer names the plugin, and replaying it shows the same violation
    assert json.loads(out.read_text())["policy"] == "kill-unkillable"
    again = oomactors("run", "--replay", str(out), "--json")
    assert again.returncode == 1 and json.loads(again.stdout)["replay"]["reproduced"] is True
    # the well-behaved plugin never trips it
    ok = oomactors("explore", CHOICE, "--check", "no_unkillable_killed", "--policy", "smallest-first",
                   "--budget", "3", "--out", str(tmp_path / "none.json"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
