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
TEST_DEBS := swaks libnet-ssleay-perl mpop fetchmail curl chromium chromium-driver systemd iproute2
# Peers and load generators the benchmarks run side by side.
BENCH_DEBS := postfix dovecot-core dovecot-lmtpd dovecot-pop3d

.PHONY: run test test-fast bench lint clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/letterbox --data $(DATA) run --dev

test: $(STAMP)
	scripts/apt-ensure $(TEST_DEBS)
	$(VENV)/bin/ruff check appliance tests bench
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	scripts/apt-ensure $(BENCH_DEBS)
	$(PY) bench/run.py $(BENCH)

lint: $(STAMP)
	$(VENV)/bin/ruff check appliance tests bench
	$(VENV)/bin/ruff format --check appliance tests

clean:
	rm -rf $(VENV) build bench/out
