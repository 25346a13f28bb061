#!/bin/sh
# What the VM differential suite needs (tests/test_vm_*.py): QEMU, a static busybox, cpio,
# gcc with glibc's static libc, and Debian's cloud kernel in the cache.  Idempotent and
# quick when everything is there; installs with apt when run as root (CI's bare Debian).
set -e
missing=""
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing="$missing qemu-system-x86"
[ -x /bin/busybox ] && ! file /bin/busybox 2>/dev/null | grep -q dynamic || missing="$missing busybox-static"
command -v cpio >/dev/null 2>&1 || missing="$missing cpio"
command -v gcc >/dev/null 2>&1 || missing="$missing gcc"
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || missing="$missing libc6-dev"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "vm suite: installing$missing" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        echo "vm suite: missing$missing (install them as root, or the VM tests fail)" >&2
        exit 0
    fi
fi
# the kernel: fetched once into the cache by oomactors itself (apt-get download + dpkg-deb -x)
"${1:-.venv/bin/python}" -c "from oomactors.vm.assets import kernel_image, runner_binary; kernel_image(); runner_binary()"
