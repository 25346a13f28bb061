"""What a VM run needs on the host: QEMU, a static busybox, the workload runner compiled
with the system's gcc, and a kernel (Debian's cloud kernel, fetched with apt into a cache).

Everything lands in the cache directory, ``$OOMACTORS_CACHE`` or ``~/.cache/oomactors``:
``kernels/<release>/boot/vmlinuz-<release>`` unpacked from the ``.deb``, and
``runner-<hash>`` built from ``runner.c`` (the hash of the source, so an edited runner is
rebuilt and an old one never reused).  Missing tools are reported as :class:`VmError`
naming the Debian package that provides them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from ..errors import InputError

KERNEL_META = "linux-image-cloud-amd64"  # Debian's metapackage: depends on the current 6.1.0-NN


class VmError(InputError):
    """The VM could not be set up or run as asked (exit status 2)."""


def cache_dir() -> Path:
    root = os.environ.get("OOMACTORS_CACHE") or os.path.join(Path.home(), ".cache", "oomactors")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def qemu_binary() -> str:
    exe = shutil.which("qemu-system-x86_64")
    if exe is None:
        raise VmError("qemu-system-x86_64 not found (Debian: apt-get install qemu-system-x86)")
    return exe


def busybox_binary() -> Path:
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(cand)
        if p.is_file() and _is_static(p):
            return p
    raise VmError("a static busybox was not found (Debian: apt-get install busybox-static)")


def _is_static(path: Path) -> bool:
    """True if the ELF file has no PT_INTERP program header (no dynamic loader)."""
    with path.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff = int.from_bytes(head[32:40], "little")
        phentsize = int.from_bytes(head[54:56], "little")
        phnum = int.from_bytes(head[56:58], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(int.from_bytes(table[i * phentsize:i * phentsize + 4], "little") != 3 for i in range(phnum))


def runner_source() -> str:
    return resources.files("oomactors.vm").joinpath("runner.c").read_text("utf-8")


def runner_binary() -> Path:
    """The workload runner, compiled ``-static`` at first use (and after any edit)."""
    src = runner_source()
    digest = hashlib.sha256(src.encode()).hexdigest()[:16]
    out = cache_dir() / f"runner-{digest}"
    if out.is_file():
        return out
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise VmError("no C compiler found to build the workload runner (Debian: apt-get install gcc)")
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        c = Path(tmp) / "runner.c"
        c.write_text(src)
        exe = Path(tmp) / "runner"
        proc = subprocess.run([cc, "-static", "-O2", "-Wall", "-pthread", "-o", str(exe), str(c)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise VmError(f"cannot build the workload runner with {cc} -static: {last}")
        os.replace(exe, out)
    return out


def kernel_image(path: str | None = None) -> Path:
    """``--kernel PATH`` as given, or the cached Debian cloud kernel (fetched if missing)."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise VmError(f"--kernel {path}: no such file")
        return p
    env = os.environ.get("OOMACTORS_KERNEL")
    if env:
        return kernel_image(env)
    kernels = cache_dir() / "kernels"
    found = sorted(kernels.glob("*/boot/vmlinuz-*"), key=lambda p: _release_key(p.name))
    if found:
        return found[-1]
    return fetch_kernel(kernels)


def _release_key(name: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", name))


def fetch_kernel(kernels: Path) -> Path:
    """``apt-get download`` the package the cloud metapackage depends on, unpack it."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise VmError("no kernel in the cache and no apt-get/dpkg-deb to fetch one: give --kernel PATH")
    deps = subprocess.run(["apt-cache", "depends", KERNEL_META], capture_output=True, text=True)
    m = re.search(r"Depends:\s*(linux-image-\S+)", deps.stdout)
    if m is None:
        raise VmError(f"apt-cache knows no {KERNEL_META} (run apt-get update?): give --kernel PATH")
    package = m[1]
    kernels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=kernels) as tmp:
        got = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if got.returncode != 0 or not debs:
            last = (got.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise VmError(f"apt-get download {package} failed: {last}")
        release = package.removeprefix("linux-image-")
        dest = kernels / release
        unpack = Path(tmp) / "unpacked"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpack)], check=True)
        shutil.rmtree(unpack / "lib", ignore_errors=True)  # modules: the cloud kernel needs none
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(unpack, dest)
    images = list(dest.glob("boot/vmlinuz-*"))
    if not images:
        raise VmError(f"{package} holds no boot/vmlinuz-*")
    return images[0]


def kvm_usable() -> bool:
    """/dev/kvm exists and opens, and the CPU offers vmx or svm (else QEMU falls back)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M))
