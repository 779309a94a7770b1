# Letterbox developer entry points. Everything a target needs is installed here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= .letterbox
STAMP := $(VENV)/.installed

# Debian packages the tests drive as real clients (swaks needs Net::SSLeay for STARTTLS;
# chromium + chromedriver for the setup page's browser test).
# systemd: `systemd-analyze verify` checks appliance/systemd/letterbox.service;
# iproute2: the mDNS tests run in network namespaces they make (ip netns).
TEST_DEBS := swaks libnet-ssleay-perl mpop fetchmail curl chromium chromium-driver systemd iproute2 e2fsprogs fdisk
# Peers and load generators the benchmarks run side by side.
BENCH_DEBS := postfix dovecot-core dovecot-lmtpd dovecot-pop3d

# Image building and booting (make image, make qemu, and the QEMU image test in make test).
IMAGE_DEBS := mmdebstrap qemu-system-x86 qemu-system-arm qemu-user-static binfmt-support qemu-utils mtools dosfstools e2fsprogs fdisk zstd xz-utils openssh-client arch-test
BOARD ?= qemu-x86_64
# Host ports forwarded to the guest by make qemu.
QEMU_PORTS ?= --smtp-port 2525 --pop3-port 1110 --pop3s-port 1995 --web-port 8080 --ssh-port 2222

.PHONY: run test test-fast bench lint clean image qemu fuzz

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/letterbox --data $(DATA) run --dev

test: $(STAMP)
	scripts/apt-ensure $(TEST_DEBS) $(IMAGE_DEBS)
	$(VENV)/bin/ruff check appliance tests bench image provisioning
	$(VENV)/bin/mypy
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# Long fuzz runs (make test runs the same targets briefly): atheris, coverage-guided, on
# smtp/data.py, smtp/syntax.py and the POP3 session for FUZZ_TIME seconds each, then
# the hypothesis properties with FUZZ_EXAMPLES examples and the network fuzz with
# FUZZ_SESSIONS seeded sessions a protocol. atheris is installed here only; where it
# does not install, the hypothesis runs stand in for it.
FUZZ_TIME ?= 300
FUZZ_EXAMPLES ?= 20000
FUZZ_SESSIONS ?= 20000
ATHERIS := atheris==3.0.0
fuzz: $(STAMP)
	@if $(VENV)/bin/pip install -q --disable-pip-version-check $(ATHERIS); then \
		for t in data_reader syntax pop3; do \
			$(PY) -m tests.fuzz.atheris_main $$t -max_total_time=$(FUZZ_TIME) || exit 1; \
		done; \
	else echo "atheris did not install on this Python: hypothesis only"; fi
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/fuzz/test_targets.py tests/fuzz/test_pop3_states.py tests/smtp/test_data.py tests/smtp/test_syntax.py tests/pop3/test_wire.py
	FUZZ_SESSIONS=$(FUZZ_SESSIONS) $(PY) -m pytest -q tests/fuzz/test_network.py

bench: $(STAMP)
	scripts/apt-ensure $(BENCH_DEBS)
	$(PY) bench/run.py $(BENCH)

lint: $(STAMP)
	$(VENV)/bin/ruff check appliance tests bench image provisioning
	$(VENV)/bin/ruff format --check appliance tests image provisioning
	$(VENV)/bin/mypy

image: $(STAMP)
	scripts/apt-ensure $(IMAGE_DEBS)
	$(PY) -m image.build $(BOARD)

qemu: $(STAMP)
	scripts/apt-ensure $(IMAGE_DEBS)
	$(PY) -m image.build $(BOARD) --compress none
	$(PY) -m image.qemu $(BOARD) $(QEMU_PORTS)

clean:
	rm -rf $(VENV) build bench/out
