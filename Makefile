# Two commands on a fresh machine:  make demo  |  make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv system-deps bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Re-install when pyproject.toml changes.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## The demo: a hub on SQLite, two simulated substations and their edges, a scenario.
demo: $(STAMP)
	$(VENV)/bin/sentinel demo $(DEMO_ARGS)

## System packages the tests start servers from (PostgreSQL, Mosquitto, socat, mbpoll);
## installed with apt-get when missing and we are root, otherwise we say what is missing.
system-deps:
	@bash scripts/system-deps.sh

## The tests, against real servers the fixtures start on 127.0.0.1.
test: $(STAMP) system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP) system-deps
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache
