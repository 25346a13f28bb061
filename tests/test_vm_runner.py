"""The VM pieces that need no guest: the workload runner run natively on a harmless
program, the config -> program translation and its refusals, the initramfs, the parsers;
and, booting QEMU, the bad-input paths of `oomactors vm` (marked vm)."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oomactors.config import parse_config
from oomactors.vm import assets, program
from oomactors.vm.assets import VmError
from oomactors.vm.guest import initramfs
from oomactors.vm.parse import runner_events, summarize_vm

ROOT = Path(__file__).resolve().parent.parent
BASE = '[machine]\ncpus = 2\nmemory = "256MiB"\n[run]\nduration = "2s"\n'


def _runner() -> Path:
    try:
        return assets.runner_binary()
    except VmError as err:
        pytest.fail(f"the runner does not build: {err}")


def test_runner_runs_a_small_program_natively(tmp_path: Path) -> None:
    cfg = parse_config(BASE + """
[[tasks]]
name = "small"
count = 2
stagger = "20ms"
program = [{ op = "alloc", size = "1MiB", rate = "64MiB/s" }, { op = "repeat", times = 2, steps = [
    { op = "alloc", size = "64KiB", kind = "shmem" }, { op = "free", size = "all" } ] },
  { op = "exit", code = 3 }]
[[tasks]]
name = "parent"
start = "50ms"
program = [{ op = "fork", comm = "kid", program = [{ op = "sleep", time = "10ms" }] }, { op = "sleep", time = "30ms" }]
""")
    leaf = {i: "-" for i in range(len(cfg.tasks))}  # natively: no cgroup
    prog = tmp_path / "prog"
    prog.write_text(program.program_text(cfg, leaf))
    out = subprocess.run([str(_runner()), str(prog)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    evs = runner_events(out.stdout)
    what = [e[2] for e in evs]
    assert what[0] in ("start", "note") and what[-1] == "end" and evs[-1][3] == {"reason": "idle"}
    tasks = {e[1]: e[3]["name"] for e in evs if e[2] == "task"}
    assert sorted(tasks.values()) == ["parent", "small", "small"]
    exits = {int(e[3]["pid"]): int(e[3]["code"]) for e in evs if e[2] == "exited"}
    assert [exits[p] for p, n in tasks.items() if n == "small"] == [3, 3]
    fork = next(e for e in evs if e[2] == "fork")
    assert fork[3]["comm"] == "kid" and int(fork[3]["child"]) in exits  # the subreaper saw the child
    summary = summarize_vm("", out.stdout)
    assert {t["comm"]: t["outcome"] for t in summary["tasks"]} == {"small": "exited", "parent": "exited",
                                                                   "kid": "exited"}


def test_runner_reports_a_refused_mmap(tmp_path: Path) -> None:
    prog = tmp_path / "prog"
    # 2^46 bytes: more address space than a process may map, whatever the overcommit mode
    prog.write_text("run duration_ms=2000 idle_stop=1\ntask name=greedy count=1 uid=0 caps=0 adj=0 nice=0 "
                    "start_ms=0 stagger_ms=0 threads=1 cgroup=- mpol=none nodes=0 rss=0 nsteps=1\n"
                    "alloc kind=anon size=70368744177664 chunk=32 rate=0 on_fail=exit\n")
    out = subprocess.run([str(_runner()), str(prog)], capture_output=True, text=True, timeout=30)
    evs = runner_events(out.stdout)
    assert [e[3] for e in evs if e[2] == "enomem"] == [{"op": "alloc"}]
    assert summarize_vm("", out.stdout)["overcommit_refusals"] == 1


@pytest.mark.parametrize("extra, message", [
    ('[[tasks]]\nname = "k"\nprogram = [{ op = "alloc", size = "1MiB", kind = "kernel" }]',
     'tasks[0].program[0]: alloc kind "kernel" cannot be expressed in the VM'),
    ('[[tasks]]\nname = "b"\nprogram = [{ op = "repeat", times = 2, steps = [{ op = "block", time = "1s" }] }]',
     "tasks[0].program[0].steps[0]: block cannot be expressed in the VM"),
    ('[[tasks]]\nname = "o"\nprogram = [{ op = "alloc", size = "1MiB", order = 3 }]',
     "tasks[0].program[0]: alloc order 3 cannot be expressed"),
    ('[[cpusets]]\nname = "c"\nmems = [0]\nmem_hardwall = true', "cpusets[0].mem_hardwall"),
    ('[kernel.fixes]\noom_lock = false', "kernel.fixes"),
    ('[[memcgs]]\npath = "/a;b"', "memcgs[0].path: '/a;b' cannot be a cgroup in the VM's init script"),
])
def test_what_the_vm_cannot_express_is_refused_before_boot(extra: str, message: str) -> None:
    with pytest.raises(VmError) as err:
        program.plan(parse_config(BASE + extra))
    assert message in str(err.value)


def test_explicit_boot_sizes_are_refused() -> None:
    cfg = parse_config(BASE.replace('memory = "256MiB"', 'memory = "256MiB"\nreserved = "10MiB"'))
    with pytest.raises(VmError, match="machine.reserved: an explicit size"):
        program.plan(cfg)


def test_cgroup_layout_keeps_processes_out_of_inner_cgroups() -> None:
    cfg = parse_config(BASE + """
[[memcgs]]
path = "/a"
max = "64MiB"
[[memcgs]]
path = "/a/b"
[[cpusets]]
name = "one"
mems = [0]
[[tasks]]
name = "inner"
memcg = "/a"
[[tasks]]
name = "leafy"
memcg = "/a/b"
[[tasks]]
name = "pinned"
memcg = "/a/b"
cpuset = "one"
""")
    dirs, leaf, lines = program.cgroup_layout(cfg)
    assert dirs["/a"] == "/sys/fs/cgroup/a"
    assert leaf == {0: "/sys/fs/cgroup/a/tasks", 1: "/sys/fs/cgroup/a/b/tasks", 2: "/sys/fs/cgroup/a/b/cs-one"}
    text = "\n".join(lines)
    assert "echo 67108864 > /sys/fs/cgroup/a/memory.max" in text
    assert "echo 0 > /sys/fs/cgroup/a/b/cs-one/cpuset.mems" in text
    assert '"+memory +cpuset" > /sys/fs/cgroup/a/cgroup.subtree_control' in text


def test_initramfs_is_a_newc_archive_with_the_runner_and_init() -> None:
    cfg = parse_config(BASE + '[[tasks]]\nname = "t"\nprogram = [{ op = "sleep", time = "1s" }]')
    data = gzip.decompress(initramfs(program.plan(cfg)))
    assert data.startswith(b"070701")
    for name in (b"bin/busybox\0", b"runner\0", b"prog\0", b"init\0", b"TRAILER!!!\0"):
        assert name in data
    assert b"task name=t count=1" in data and b"/runner /prog /dev/ttyS1" in data


def test_overcommit_sysctls_are_written_last_and_exclusively() -> None:
    init = program.plan(parse_config(BASE + "[kernel]\novercommit_memory = 2\novercommit_ratio = 80")).init
    lines = init.splitlines()
    ratio = lines.index("must sysctl -q -w vm.overcommit_ratio=80")
    assert lines[ratio + 1] == "must sysctl -q -w vm.overcommit_memory=2"
    assert "overcommit_kbytes" not in init  # writing it would zero the ratio


# --- bad input against a real QEMU ---------------------------------------------------------

def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oomactors", "vm", *args], capture_output=True, text=True,
                          timeout=300, **kw)


def _our_qemus(marker: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmd and marker.encode() in cmd:
                out.append(int(d.name))
    return out


@pytest.mark.parametrize("cmd", ["run", "compare"])
@pytest.mark.parametrize("which", ["config", "kernel", "config_link"])
def test_a_console_path_that_is_an_input_is_refused_before_boot(tmp_path: Path, cmd: str, which: str) -> None:
    cfg = tmp_path / "c.toml"
    text = BASE + '[[tasks]]\nname = "t"\nprogram = [{ op = "sleep", time = "1s" }]'
    cfg.write_text(text)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\0" * 4096)
    link = tmp_path / "link.toml"
    link.symlink_to(cfg)
    console = {"config": cfg, "kernel": kernel, "config_link": link}[which]
    what = "the kernel" if which == "kernel" else "the config"
    r = _cli(cmd, str(cfg), "--kernel", str(kernel), "--console", str(console), "--timeout", "20")
    assert r.returncode == 2, r.stderr
    assert r.stderr == (f"oomactors: error: --console {console}: is {what} "
                        f"({kernel if which == 'kernel' else cfg}); refusing to overwrite an input\n")
    assert cfg.read_text() == text and kernel.read_bytes() == b"\0" * 4096  # untouched
    assert not _our_qemus(str(tmp_path))


@pytest.mark.vm
def test_a_kernel_that_does_not_boot(tmp_path: Path) -> None:
    bad = tmp_path / "vmlinuz"
    bad.write_bytes(b"\0" * 4096)
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE + '[[tasks]]\nname = "t"\nprogram = [{ op = "sleep", time = "1s" }]')
    r = _cli("run", str(cfg), "--kernel", str(bad), "--timeout", "20")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("oomactors: error: ")
    assert "qemu failed to start the VM" in r.stderr or "does not boot" in r.stderr
    assert not _our_qemus(str(tmp_path))


@pytest.mark.vm
def test_a_config_the_vm_cannot_express_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE + '[[tasks]]\nname = "t"\nprogram = [{ op = "block", time = "1s" }]')
    r = _cli("compare", str(cfg))
    assert r.returncode == 2
    assert r.stderr == ("oomactors: error: tasks[0].program[0]: block cannot be expressed in the VM: no user "
                        "program can sleep uninterruptibly (D state) for a chosen time\n")


@pytest.mark.vm
def test_a_workload_that_hangs_times_out_and_leaves_no_qemu(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE.replace('duration = "2s"', 'duration = "10min"')
                   + '[[tasks]]\nname = "t"\nprogram = [{ op = "sleep", time = "10min" }]')
    r = _cli("run", str(cfg), "--timeout", "30", env={**os.environ, "TMPDIR": str(tmp_path)})
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    # on a loaded host the guest may still be booting at the deadline
    assert ("the workload did not finish: the VM was stopped after 30s (timeout)" in r.stderr
            or "never reached the workload (the VM timed out" in r.stderr), r.stderr
    assert not _our_qemus(str(tmp_path))


@pytest.mark.vm
def test_ctrl_c_stops_the_vm_and_exits_130(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE.replace('duration = "2s"', 'duration = "10min"')
                   + '[[tasks]]\nname = "t"\nprogram = [{ op = "sleep", time = "10min" }]')
    proc = subprocess.Popen([sys.executable, "-m", "oomactors", "vm", "run", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        deadline = time.monotonic() + 60
        while not _our_qemus(str(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _our_qemus(str(tmp_path)), "QEMU never started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "interrupted" in err
    time.sleep(0.5)
    assert not _our_qemus(str(tmp_path))


def test_summary_of_a_real_memcg_oom_console() -> None:
    """A 6.1 guest's console (configs/vm/memcg-max.toml) and a hand-made event stream: the
    kill, its points from the task table (rss 10291 + 126976 B of page tables = 31 pages),
    the constraint, the task outcomes and the memcg files."""
    console = (ROOT / "tests" / "data" / "vm" / "memcg-max.console").read_text()
    events = "\n".join([
        "=workload", "@5000000000 100 start tasks=3 duration_ms=4000",
        "@5100000000 106 task name=helper index=0", "@5600000000 108 task name=hog index=0",
        "@7800000000 100 died pid=108 signal=9", "@9000000000 100 end reason=duration",
        "=memcg /work", "low 0", "high 0", "max 26", "oom 1", "oom_kill 1", "oom_group_kill 0",
        "memory.current 9011200", "memory.peak 50331648", "memory.max 50331648", "memory.high max",
        "memory.swap.current 0", "memory.swap.max max",
        "=meminfo-end", "Committed_AS:      12345 kB"])
    s = summarize_vm(console, events)
    assert s["kernel"] == "6.1.0-57-cloud-amd64" and s["profile"] == "linux-6.1"
    assert s["kills"] == [{"t": 2.781198, "pid": 108, "comm": "hog", "points": 10322,
                           "message": "Memory cgroup out of memory", "constraint": "CONSTRAINT_MEMCG",
                           "memcg": "/work"}]
    assert s["oom_invocations"] == 1 and s["panic"] is None and s["end_reason"] == "duration"
    assert {t["comm"]: t["outcome"] for t in s["tasks"]} == {"helper": "running", "hog": "killed"}
    mc = s["memcgs"]["/work"]
    assert mc["events"]["oom_kill"] == 1 and mc["events"]["max"] == 26
    assert (mc["usage"], mc["peak_usage"], mc["max"], mc["high"], mc["swap_max"]) == (2200, 12288, 12288, "max", "max")
    assert s["committed_as"] == 12345 // 4 and s["simulated_seconds"] == 4.0


def test_a_task_the_runner_could_not_set_up_is_named() -> None:
    events = "\n".join(["@1 100 start tasks=1 duration_ms=1000", "@2 101 task name=odd index=0",
                        "@3 101 error what=setresuid errno=22", "@4 100 exited pid=101 code=111",
                        "@5 100 end reason=idle"])
    assert summarize_vm("", events)["runner_errors"] == ["odd: setresuid failed (errno 22)"]
