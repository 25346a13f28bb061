# Two entry points that work from a bare checkout: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean vm-deps

# tests/plugin_pkg is a third-party kill policy packaged on its own: the suite checks
# that oomactors finds it through its entry point, so it is installed like one.
$(STAMP): pyproject.toml tests/plugin_pkg/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,docs,dask,all]' -e tests/plugin_pkg
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/oomactors run

# the VM differential suite (tests/test_vm_*.py) needs QEMU, busybox and a kernel
vm-deps: $(STAMP)
	sh tests/vm/setup.sh $(BIN)/python

test: $(STAMP) vm-deps
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
