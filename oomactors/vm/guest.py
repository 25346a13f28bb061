"""Booting the guest: the initramfs, the QEMU command line, and a run that always ends
with QEMU gone (its own process group, killed in ``finally``), whatever ended it: the
guest powering off, a panic, the timeout, Ctrl-C (KeyboardInterrupt or
:mod:`oomactors.interrupt`'s flag).
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import interrupt
from .assets import VmError, busybox_binary, kvm_usable, qemu_binary, runner_binary
from .program import Plan

# no_timer_check: on a busy host TCG is too slow for the boot's IO-APIC timer test, which
# then panics ("IO-APIC + timer doesn't work!"); the check is for broken hardware
APPEND = ("console=ttyS0 loglevel=7 panic=-1 transparent_hugepage=never mitigations=off no_timer_check "
          "rdinit=/init")


def _cpio_entry(name: str, mode: int, data: bytes, ino: int) -> bytes:
    """One record of a newc cpio archive (the initramfs format)."""
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    head = b"070701" + b"".join(f"{f:08x}".encode() for f in fields)
    out = head + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4)
    out += data + b"\0" * (-len(data) % 4)
    return out


def initramfs(plan: Plan) -> bytes:
    """A gzip'd newc archive: busybox, the runner, the program and /init."""
    files = [("dev", 0o040755, b""), ("proc", 0o040755, b""), ("sys", 0o040755, b""), ("bin", 0o040755, b""),
             ("tmp", 0o041777, b""),
             ("bin/busybox", 0o100755, busybox_binary().read_bytes()),
             ("runner", 0o100755, runner_binary().read_bytes()),
             ("prog", 0o100644, plan.program.encode()),
             ("init", 0o100755, plan.init.encode())]
    body = b"".join(_cpio_entry(n, mode, data, i + 1) for i, (n, mode, data) in enumerate(files))
    body += _cpio_entry("TRAILER!!!", 0, b"", 0)
    return gzip.compress(body, compresslevel=1)


def qemu_command(plan: Plan, kernel: Path, workdir: Path) -> list[str]:
    cmd = [qemu_binary(), "-nodefaults", "-no-reboot", "-display", "none", "-monitor", "none",
           "-accel", "kvm" if kvm_usable() else "tcg", "-m", f"{plan.memory // (1 << 20)}M",
           "-smp", str(plan.cpus), "-kernel", str(kernel), "-initrd", str(workdir / "initrd.gz"),
           "-append", APPEND,
           "-serial", f"file:{workdir / 'console.log'}", "-serial", f"file:{workdir / 'events.log'}"]
    if len(plan.node_memory) > 1:
        for n, (size, cpus) in enumerate(zip(plan.node_memory, plan.node_cpus)):
            cmd += ["-object", f"memory-backend-ram,id=m{n},size={size}"]
            node = f"node,nodeid={n},memdev=m{n}"
            if cpus:
                node += f",cpus={cpus[0]}-{cpus[-1]}"
            cmd += ["-numa", node]
    disks = []
    if plan.swap:
        disks.append(("swap", plan.swap))
    if plan.cache_disk:
        disks.append(("files", plan.cache_disk))
    if disks:
        cmd += ["-device", "nvme,id=nvme0,serial=oomactors"]
        for nsid, (name, size) in enumerate(disks, start=1):
            img = workdir / f"{name}.img"
            with img.open("wb") as f:
                f.truncate(size)  # sparse
            cmd += ["-drive", f"file={img},if=none,id={name},format=raw",
                    "-device", f"nvme-ns,drive={name},bus=nvme0,nsid={nsid}"]
    return cmd


@dataclass
class GuestRun:
    console: str
    events: str
    ended: str          # "poweroff", "timeout", "qemu-error"
    wall_s: float
    stderr: str


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
        pass


def boot(plan: Plan, kernel: Path, timeout_s: float | None = None, keep: str | None = None) -> GuestRun:
    """Boot ``kernel`` with the plan's initramfs and wait for the guest to end."""
    timeout = plan.timeout_s if timeout_s is None else timeout_s
    with tempfile.TemporaryDirectory(prefix="oomactors-vm-") as tmp:
        work = Path(tmp)
        (work / "initrd.gz").write_bytes(initramfs(plan))
        cmd = qemu_command(plan, kernel, work)
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        ended = "poweroff"
        try:
            while True:
                try:
                    proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if interrupt.requested():
                    raise KeyboardInterrupt
                if time.monotonic() - start > timeout:
                    ended = "timeout"
                    break
        finally:
            _kill_group(proc)
        stderr = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if ended == "poweroff" and proc.returncode not in (0, None):
            ended = "qemu-error"
        console = _read(work / "console.log")
        events = _read(work / "events.log")
        if keep:
            try:
                Path(keep).write_text(console)
            except OSError as err:
                raise VmError(f"--console {keep}: cannot write the console log: {err.strerror or err}") from None
    return GuestRun(console=console, events=events, ended=ended, wall_s=time.monotonic() - start,
                    stderr=stderr.strip())


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace").replace("\r", "")
    except FileNotFoundError:
        return ""


def check_boot(run: GuestRun, kernel: Path) -> None:
    """A guest that never reached the workload: one line saying why."""
    if run.ended == "qemu-error":
        last = (run.stderr.splitlines() or ["(no message)"])[-1]
        raise VmError(f"qemu failed to start the VM: {last}")
    if "=setup-failed" in run.events:
        what = run.events.split("=setup-failed", 1)[1].splitlines()[0].strip()
        raise VmError(f"the guest could not set up the machine: {what} failed")
    if "=workload" not in run.events:
        why = "timed out" if run.ended == "timeout" else "stopped"
        if "Kernel panic" in run.console:
            line = next(ln for ln in run.console.splitlines() if "Kernel panic" in ln)
            raise VmError(f"{kernel}: the kernel panicked during boot: {line.split('Kernel panic', 1)[1].strip(' -')}")
        if not run.console.strip():
            raise VmError(f"{kernel}: the kernel does not boot (no console output; the VM {why} after "
                          f"{run.wall_s:.1f}s)")
        last = next((ln.strip() for ln in reversed(run.console.splitlines()) if ln.strip()), "")
        raise VmError(f"{kernel}: the guest never reached the workload (the VM {why} after {run.wall_s:.1f}s; "
                      f"last console line: {last[:160]})")
