"""`oomactors vm`: a config's workload on a real Linux kernel in QEMU (docs/vm.md)."""
