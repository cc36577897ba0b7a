# The two commands: `make run` and `make test`. Both install what is missing first.
SHELL := /bin/bash
.DEFAULT_GOAL := run

VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin

# what libvirt-python needs to build, and what a virtual environment needs
APT_RUN  := gcc pkg-config libvirt-dev python3-dev python3-venv
# a real hypervisor for the tests, tmux for end-to-end runs, qemu-img for test disks
APT_TEST := $(APT_RUN) libvirt-daemon-system qemu-system-x86 qemu-utils tmux
# PostgreSQL for the storage suite: scripts/postgres-up.sh (run by `services`) installs
# `postgresql` with --no-install-recommends, starts it on loopback, makes role and db;
# scripts/sshd-up.sh installs `openssh-server` and runs a private sshd on loopback, so the
# remote-URI tests reach libvirtd through a real qemu+ssh:// transport

.PHONY: run test check lint typecheck services system-run system-test screenshots bench clean

run: system-run $(VENV)/.run-installed
	$(BIN)/virtwatch $(ARGS)

test: system-test $(VENV)/.dev-installed services check
	$(BIN)/pytest

check: $(VENV)/.dev-installed
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

system-run:
	@scripts/apt-ensure.sh $(APT_RUN)

system-test:
	@scripts/apt-ensure.sh $(APT_TEST)

services:
	@scripts/hypervisor-up.sh
	@scripts/postgres-up.sh
	@scripts/sshd-up.sh

$(VENV)/bin/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(VENV)/bin/pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(VENV)/bin/pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.run-installed

screenshots: $(VENV)/.dev-installed
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
