"""Tests of the unit parsers and the config loader (schema, defaults, error messages)."""

from __future__ import annotations

import msgpack
import pytest

from oomactors.config import (AllocStep, Config, ForkStep, FreeStep, RepeatStep, SleepStep,
                              default_config_text, load_config, load_default, parse_config)
from oomactors.errors import ConfigError, InputError
from oomactors.kernel.gfp import GFP_HIGHUSER_MOVABLE, GFP_KERNEL, __GFP_NORETRY
from oomactors.units import (GiB, KiB, MiB, PAGE_SIZE, Duration, parse_duration, parse_rate,
                             parse_size, to_jiffies)

# --- units ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    (0, 0), (4096, 4096), ("4096", 4096), ("4096B", 4096), ("64KiB", 64 * KiB),
    ("512MiB", 512 * MiB), ("2GiB", 2 * GiB), ("1.5GiB", 3 * GiB // 2), ("3k", 3 * KiB),
    ("3K", 3 * KiB), ("2KB", 2 * KiB), ("7M", 7 * MiB), ("7MB", 7 * MiB), ("1G", GiB),
    ("1GB", GiB), ("1T", 1024 * GiB), ("100 pages", 100 * PAGE_SIZE), ("1 page", PAGE_SIZE),
    ("0.3KiB", 307), (" 16 MiB ", 16 * MiB),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text, message", [
    ("-5MiB", "negative size"), (-1, "negative size"), ("lots", "cannot parse size 'lots'"),
    ("5XB", "unknown size unit 'XB'"), (True, "expected a size such as '64MiB'"),
    (1.5, "expected a size such as '64MiB'"), ("", "cannot parse size ''"),
])
def test_parse_size_errors(text, message):
    with pytest.raises(ValueError) as exc:
        parse_size(text)
    assert str(exc.value) == message


@pytest.mark.parametrize("text, expected", [
    ("2s", Duration(2_000_000_000)), ("10ms", Duration(10_000_000)),
    ("250us", Duration(250_000)), ("5min", Duration(300_000_000_000)),
    ("1.5s", Duration(1_500_000_000)), ("7ns", Duration(7)), ("0s", Duration(0)),
    ("3 jiffies", Duration(0, 3)), ("1 jiffy", Duration(0, 1)),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("value, message", [
    (10, "duration needs a unit"), (1.5, "duration needs a unit"),
    ("10", "duration needs a unit"), ("-2s", "negative duration"),
    ("1.5 jiffies", "jiffies must be a whole number"),
    ("3 fortnights", "unknown duration unit 'fortnights'"),
])
def test_parse_duration_errors(value, message):
    with pytest.raises(ValueError) as exc:
        parse_duration(value)
    assert str(exc.value) == message


def test_to_jiffies_rounds_up_and_keeps_jiffies():
    assert to_jiffies(parse_duration("12ms"), 250) == 3
    assert to_jiffies(parse_duration("13ms"), 250) == 4
    assert to_jiffies(parse_duration("1ns"), 100) == 1
    assert to_jiffies(parse_duration("0s"), 1000) == 0
    assert to_jiffies(parse_duration("1s"), 300) == 300
    assert to_jiffies(parse_duration("5 jiffies"), 1000) == 5


@pytest.mark.parametrize("text, expected", [
    ("32MiB/s", 32 * MiB), ("100 pages/s", 100 * PAGE_SIZE), ("1GiB/s", GiB),
    ("0", 0), (0, 0), ("0/s", 0), (1000, 1000), ("2MiB/sec", 2 * MiB),
])
def test_parse_rate(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text, message", [
    ("32MiB", "rate needs '/s', e.g. '32MiB/s'"), ("-1MiB/s", "negative rate"),
    ("3XB/s", "unknown rate unit 'XB'"), (-5, "negative rate"),
])
def test_parse_rate_errors(text, message):
    with pytest.raises(ValueError) as exc:
        parse_rate(text)
    assert str(exc.value) == message


# --- loading --------------------------------------------------------------------------------


def test_empty_config_is_valid_and_resolves_auto_sizes():
    cfg = parse_config("")
    m = cfg.machine
    assert (m.cpus, m.nodes, m.memory) == (4, 1, 2 * GiB)
    assert m.dma32 == 512 * MiB            # min(node 0 / 4, 1GiB)
    assert m.reserved == 32 * MiB          # memory / 64, capped at 256MiB
    assert m.slab_reclaimable == 16 * MiB and m.slab_unreclaimable == 8 * MiB
    assert cfg.kernel.hz == 250 and cfg.kernel.min_free_kbytes == "auto"
    assert cfg.kernel.lowmem_reserve_ratio == (256, 256, 32)
    assert cfg.run.duration == Duration(30_000_000_000)
    assert cfg.tasks == ()


def test_auto_caps_and_numa_split():
    m = parse_config('[machine]\nmemory = "64GiB"\nnodes = 4').machine
    assert m.node_memory == (16 * GiB,) * 4
    assert m.dma32 == GiB and m.reserved == 256 * MiB


def test_default_config_loads_and_matches_quickstart(tmp_path):
    cfg = load_default()
    assert cfg.machine.swap == 0 and cfg.machine.memory == 2 * GiB
    assert cfg.machine.page_cache == 256 * MiB and cfg.machine.dirty == 64 * MiB
    assert cfg.run.duration == Duration(20_000_000_000) and cfg.run.seed == 0
    assert [t.name for t in cfg.tasks] == ["sshd", "postgres", "nginx", "leaker"]
    leak = cfg.tasks[-1]
    assert leak.uid == 1000 and leak.start == Duration(1_000_000_000)
    (repeat,) = leak.program
    assert isinstance(repeat, RepeatStep) and repeat.times is None
    assert isinstance(repeat.steps[0], AllocStep) and repeat.steps[0].size == 16 * MiB
    path = tmp_path / "d.toml"
    path.write_text(default_config_text())
    assert load_config(path) == cfg
    from pathlib import Path
    quickstart = Path(__file__).resolve().parent.parent / "configs" / "quickstart.toml"
    assert quickstart.read_text() == default_config_text()


def test_recursive_repeat_and_fork():
    cfg = parse_config("""
[[tasks]]
name = "forker"
program = [
  { op = "repeat", times = 3, steps = [
      { op = "fork", comm = "child", program = [
          { op = "repeat", steps = [ { op = "sleep", time = "1 jiffy" } ] },
          { op = "alloc", size = "1MiB", gfp = "GFP_KERNEL | __GFP_NORETRY", kind = "kernel" },
          { op = "free", size = "all" },
      ] },
      { op = "fork", clone_vm = true },
  ] },
  { op = "set_oom_score_adj", value = -1000 },
  { op = "block", time = "2s", hold_mmap_lock = false },
  { op = "touch_file", size = "8MiB", dirty = true, rate = "4MiB/s" },
  { op = "compute", time = "5ms" },
  { op = "exit", code = 3 },
]
""")
    prog = cfg.tasks[0].program
    assert [s.op for s in prog] == ["repeat", "set_oom_score_adj", "block", "touch_file",
                                    "compute", "exit"]
    fork, fork2 = prog[0].steps
    assert prog[0].times == 3
    assert isinstance(fork, ForkStep) and fork.comm == "child" and not fork.clone_vm
    assert fork2.comm is None and fork2.clone_vm and fork2.program == ()
    inner = fork.program
    assert isinstance(inner[0], RepeatStep) and inner[0].steps == (SleepStep(op="sleep", time=Duration(0, 1)),)
    assert inner[1].gfp_mask == GFP_KERNEL | __GFP_NORETRY and inner[1].order == 0
    assert isinstance(inner[2], FreeStep) and inner[2].size == "all"
    assert prog[3].rate == 4 * MiB and prog[3].mapped


def test_alloc_defaults():
    step = parse_config('[[tasks]]\nname="a"\nprogram=[{op="alloc", size="1MiB"}]').tasks[0].program[0]
    assert (step.gfp, step.gfp_mask) == ("GFP_HIGHUSER_MOVABLE", GFP_HIGHUSER_MOVABLE)
    assert (step.kind, step.chunk, step.on_fail, step.rate) == ("anon", 32, "exit", None)


def test_as_dict_round_trips_through_msgpack():
    cfg = load_default()
    d = cfg.as_dict()
    assert d["machine"]["dma32"] == 512 * MiB            # "auto" resolved
    assert d["run"]["duration"] == {"ns": 20_000_000_000, "jiffies": None}
    packed = msgpack.packb(d)
    back = msgpack.unpackb(packed)
    assert back == d
    assert Config.model_validate(back) == cfg


def test_config_is_frozen():
    cfg = load_default()
    with pytest.raises(Exception):
        cfg.machine.cpus = 8  # type: ignore[misc]


# --- error messages ----------------------------------------------------------------------------

TASK = '[[tasks]]\nname = "a"\n'


@pytest.mark.parametrize("text, message", [
    ('[machine]\nmemroy = "1GiB"', "x.toml: machine.memroy: unknown key"),
    ("surprise = 1", "x.toml: surprise: unknown key"),
    ('[kernel]\nhz = "250"', "x.toml: kernel.hz: expected an integer"),
    ("[kernel]\nhz = true", "x.toml: kernel.hz: expected an integer"),
    ("[kernel]\nhz = 251", "x.toml: kernel.hz: must be one of 100, 250, 300, 1000"),
    ('[kernel]\nprofile = "linux-9"', "x.toml: kernel.profile: unknown profile (known: linux-2.4, linux-2.6.36, linux-3.10, linux-4.14, linux-4.19, linux-5.10, linux-6.1, linux-6.12)"),
    ("[kernel]\nwatermark_scale_factor = 0", "x.toml: kernel.watermark_scale_factor: must be at least 1"),
    ("[kernel]\npanic_on_oom = 3", "x.toml: kernel.panic_on_oom: must be at most 2"),
    ("[kernel]\nlowmem_reserve_ratio = [1, 2]",
     "x.toml: kernel.lowmem_reserve_ratio: expected 3 integers (DMA, DMA32, NORMAL)"),
    ('[kernel]\ntime_slice = "0ms"', "x.toml: kernel.time_slice: must be greater than 0"),
    ("[run]\nduration = 30", "x.toml: run.duration: duration needs a unit"),
    ('[run]\nstop_when_idle = "yes"', "x.toml: run.stop_when_idle: expected true or false"),
    ("[machine]\ncpus = 0\nnodes = 0", "x.toml: machine.cpus: must be at least 1 (+1 more)"),
    ('[machine]\nmemory = "8MiB"', "x.toml: machine.memory: must be at least 16MiB"),
    ('[machine]\nmemory = "1GiB"\ndma32 = "1GiB"',
     "x.toml: machine.dma32: dma + dma32 must be smaller than node 0's memory (1GiB)"),
    ('[machine]\nmemory = "1GiB"\npage_cache = "900MiB"',
     "x.toml: machine: page_cache + dirty + slab_* + reserved = 928MiB leave less than 1/4 "
     "of memory free at boot"),
    ('[machine]\nswap_bandwidth = "0/s"', "x.toml: machine.swap_bandwidth: must be greater than 0"),
    ("machine = 5", "x.toml: machine: expected a table"),
    ('tasks = { name = "x" }', "x.toml: tasks: expected an array"),
    ("[[tasks]]\ncount = 2", "x.toml: tasks[0].name: missing required key"),
    ('[[tasks]]\nname = "has space"', "x.toml: tasks[0].name: must not contain whitespace"),
    ('[[tasks]]\nname = "a23456789012345x"',
     "x.toml: tasks[0].name: longer than 15 characters (TASK_COMM_LEN)"),
    (TASK + '[[tasks]]\nname = "b"\n' + TASK, "x.toml: tasks[2].name: duplicate task name 'a' (also tasks[0])"),
    (TASK + 'caps = ["CAP_NET_ADMIN"]',
     "x.toml: tasks[0].caps[0]: expected 'CAP_SYS_ADMIN', 'CAP_SYS_RESOURCE', 'CAP_SYS_RAWIO', "
     "'CAP_IPC_LOCK' or 'CAP_KILL'"),
    (TASK + 'program = [{op="sleep", time="1s"}, {op="exit"}, {op="alloc", size="-5MiB"}]',
     "x.toml: tasks[0].program[2].size: negative size"),
    (TASK + 'program = [{op="alloc", size=0}]', "x.toml: tasks[0].program[0].size: must be greater than 0"),
    (TASK + 'program = [{op="alloc", size="1MiB", gfp="GFP_KERNEL | __GFP_BOGUS"}]',
     "x.toml: tasks[0].program[0].gfp: unknown GFP flag '__GFP_BOGUS'"),
    (TASK + 'program = [{op="alloc", size="1MiB", kind="file"}]',
     "x.toml: tasks[0].program[0].kind: expected 'anon', 'shmem' or 'kernel'"),
    (TASK + 'program = [{op="alloc", size="1MiB", colour="red"}]',
     "x.toml: tasks[0].program[0].colour: unknown key"),
    (TASK + 'program = [{op="alocate", size="1MiB"}]',
     "x.toml: tasks[0].program[0].op: unknown op 'alocate' (expected 'alloc', 'touch_file', "
     "'access', 'free', 'fork', 'exit', 'sleep', 'compute', 'block', 'set_oom_score_adj', 'repeat', 'write')"),
    (TASK + 'program = [{size="1MiB"}]', "x.toml: tasks[0].program[0].op: missing required key"),
    (TASK + 'program = [{op="repeat", steps=[]}]', "x.toml: tasks[0].program[0].steps: must not be empty"),
    (TASK + 'program = [{op="repeat", times=0, steps=[{op="exit"}]}]',
     "x.toml: tasks[0].program[0].times: must be at least 1"),
    (TASK + 'program = [{op="repeat", steps=[{op="fork", program=[{op="sleep", time=10}]}]}]',
     "x.toml: tasks[0].program[0].steps[0].program[0].time: duration needs a unit"),
    (TASK + 'program = [{op="free", size="some"}]',
     "x.toml: tasks[0].program[0].size: cannot parse size 'some'"),
    (TASK + 'program = [{op="set_oom_score_adj", value=2000}]',
     "x.toml: tasks[0].program[0].value: must be at most 1000"),
    ("[machine\ncpus = 1", "x.toml: line 1 col 9: TOML syntax error: Expected ']' at the end of a table declaration"),
    ("[machine]\ncpus = ", "x.toml: line 2 col 8: TOML syntax error: Invalid value"),
])
def test_error_messages(text, message):
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "x.toml")
    assert str(exc.value) == message
    assert "\n" not in str(exc.value)


def test_missing_file_and_error_class(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as exc:
        load_config(missing)
    assert str(exc.value) == f"{missing}: cannot read config: No such file or directory"
    assert isinstance(exc.value, InputError) and exc.value.exit_status == 2


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text("[kernel]\nhz = 7\n")
    with pytest.raises(ConfigError, match=rf"^{path}: kernel.hz: must be one of"):
        load_config(str(path))
