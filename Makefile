# Fresh machine: `make run` (server on the embedded defaults) and `make test` (whole suite).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint system-deps test-system-deps bench

run: $(STAMP) system-deps
	$(VENV)/bin/voice serve

test: $(STAMP) test-system-deps
	$(PY) -m ruff check .
	$(PY) -m pytest

bench: $(STAMP) test-system-deps
	$(PY) bench/ivr_latency.py
	$(PY) bench/capacity.py

lint: $(STAMP)
	$(PY) -m ruff check .

$(STAMP): pyproject.toml
	@python3 -c 'import ensurepip, venv' 2>/dev/null || scripts/apt-ensure __venv__:python3-venv
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

# Debian packages: TTS for prompts and Kamailio (the SIP front) at run time; SIP peers for the
# tests. Kamailio lives in /usr/sbin, often not on a user's PATH, hence the full path.
system-deps:
	@scripts/apt-ensure espeak-ng:espeak-ng /usr/sbin/kamailio:kamailio

# PostgreSQL: tests start a throwaway server (tests/pg.py); Debian keeps it off PATH.
test-system-deps:
	@scripts/apt-ensure espeak-ng:espeak-ng sox:sox sipp:sip-tester \
		/usr/sbin/kamailio:kamailio baresip:baresip-core \
		'/usr/lib/postgresql/*/bin/initdb:postgresql' \
		/usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver
