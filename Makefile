# The two commands of the README: `make demo` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install test demo lint local-server clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

## Run the test suite (what CI runs).
test: $(STAMP)
	$(PY) -m pytest -q tests

## Start the local PanDA server, run the example DAG panda_submit_and_wait against it, print the outcome.
demo: $(STAMP)
	$(PY) scripts/demo.py

## Run the local PanDA server in the foreground (prints the connection as its first line).
local-server: $(STAMP)
	$(PY) -m airflow_provider_panda.testing.server --port 8443

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .demo
