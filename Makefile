# Two commands matter: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test-deps redis-server chromium test fuzz lint demo bench bench-server bench-instructions soak readme clean

install: $(VENV)/.installed provider/node_modules/.package-lock.json

# What only the test suite needs, from Debian: a real Redis and a real browser.
test-deps: redis-server chromium

# The Redis tests run a real redis-server (Debian's package); install it when it is missing.
redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# npm ci writes node_modules/.package-lock.json, so the lock file's date decides a reinstall.
provider/node_modules/.package-lock.json: provider/package-lock.json
	npm ci --prefix provider --no-audit --no-fund --loglevel=error

# The browser test drives Debian's chromium through Playwright (never `playwright install`).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Coverage (floor: fail_under in pyproject.toml) through `coverage run`, not `pytest --cov`: the package's
# pytest11 plugin imports it before pytest-cov starts, so every import-time line would count as missed.
test: lint test-deps
	$(BIN)/python -m coverage run -m pytest
	$(BIN)/python -m coverage report
	$(BIN)/python -m benchmarks.bench_request --quick

# The fuzzing suite at full strength: over 100,000 generated inputs (`make test` runs a few thousand).
# The counts per property are printed at the end and written to build/fuzz-report.json.
fuzz: install
	mkdir -p build
	HYPOTHESIS_PROFILE=fuzz FUZZ_REPORT=build/fuzz-report.json $(BIN)/pytest tests/test_fuzz.py

demo: install
	$(BIN)/python -m examples.demo

readme: install
	$(BIN)/python -m scripts.update_readme

bench: install
	$(BIN)/python -m benchmarks.bench_request

# Requests per second through real uvicorn processes (benchmarks/README.md, "bench_server"). The load
# comes from Debian's wrk, installed here when missing (the script falls back to a Python client).
bench-server: install redis-server
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python -m benchmarks.bench_server

# Instructions per request under Debian's valgrind (callgrind): bench_request's rows, counted, not timed,
# so a change can be compared on a noisy shared machine (benchmarks/README.md, "bench_instructions").
bench-instructions: install
	@command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
	$(BIN)/python -m benchmarks.bench_instructions

# 1,000 real logins, then 60 s of mixed traffic (logouts, refreshes) on two app processes sharing a
# real Redis: fails on any error, cross-user answer, accepted logged-out cookie or 20 MB of growth
# (benchmarks/README.md, "soak"). `python -m benchmarks.soak --smoke` is the 20-user, 5 s version.
soak: install redis-server
	$(BIN)/python -m benchmarks.soak

clean:
	rm -rf $(VENV) provider/node_modules .mypy_cache .ruff_cache .pytest_cache build
