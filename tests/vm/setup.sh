#!/bin/sh
# What the VM differential suite needs (tests/test_vm_*.py): QEMU, a static busybox, gcc
# with glibc's static libc, and Debian's cloud kernel in the cache.  Idempotent and quick
# when everything is there; installs with apt when run as root (CI's bare Debian).
# Usage: tests/vm/setup.sh [PYTHON]   (the venv's python, which has oomactors installed)
set -e
PY="${1:-.venv/bin/python}"
missing=""
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing="$missing qemu-system-x86"
"$PY" -c "from oomactors.vm.assets import busybox_binary; busybox_binary()" 2>/dev/null \
    || missing="$missing busybox-static"
command -v cpio >/dev/null 2>&1 || missing="$missing cpio"
command -v gcc >/dev/null 2>&1 || missing="$missing gcc"
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || missing="$missing libc6-dev"
kernel=$("$PY" -c "from oomactors.vm.assets import cache_dir
print(len(list((cache_dir() / 'kernels').glob('*/boot/vmlinuz-*'))))")
root=no
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && root=yes
if [ "$root" = yes ] && { [ -n "$missing" ] || [ "$kernel" = 0 ]; }; then
    apt-get update -qq
fi
if [ -n "$missing" ]; then
    if [ "$root" = yes ]; then
        echo "vm suite: installing$missing" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        echo "vm suite: missing$missing (install them as root, or the VM tests fail)" >&2
        exit 0
    fi
fi
# the kernel (apt-get download + dpkg-deb -x into the cache) and the runner (gcc -static)
"$PY" -c "from oomactors.vm.assets import kernel_image, runner_binary; kernel_image(); runner_binary()"
