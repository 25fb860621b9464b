# The two commands of the README: `make demo` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The oldest Airflow that pyproject.toml admits, tested in its own virtualenv.
AIRFLOW_OLDEST := $(shell sed -n 's/.*"apache-airflow>=\([0-9.]*\)".*/\1/p' pyproject.toml)
OLD_VENV := .venv-airflow-$(AIRFLOW_OLDEST)
OLD_STAMP := $(OLD_VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install test test-stress test-oldest test-real real-up real-down demo lint local-server clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

## Run the test suite against the local PanDA server (what CI runs first).
test: $(STAMP)
	$(PY) -m pytest -q -n 3 tests

## The flake check: the same suite with a busy process on every core (it must pass like this too).
test-stress: $(STAMP)
	$(PY) scripts/with_cpu_hog.py -- $(PY) -m pytest -q -n 3 tests

## The same suite on the oldest Airflow release pyproject.toml admits.
$(OLD_STAMP): pyproject.toml
	test -x $(OLD_VENV)/bin/python || $(PYTHON) -m venv $(OLD_VENV)
	$(OLD_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLD_VENV)/bin/python -m pip install -q 'apache-airflow==$(AIRFLOW_OLDEST)' -e '.[test]'
	rm -f $(OLD_VENV)/.installed-* && touch $@

test-oldest: $(OLD_STAMP)
	$(OLD_VENV)/bin/python -c 'import airflow; print("Airflow", airflow.__version__)'
	$(OLD_VENV)/bin/python -m pytest -q -n 3 tests

## The contract suite and the operators' flows against the real panda-server + JEDI (needs root).
test-real: $(STAMP)
	@start=$$(date +%s); \
	$(PY) -m integration.real_panda.harness up && \
	REAL_PANDA=1 REAL_PANDA_KEEP=1 $(PY) -m pytest -q -n 2 tests/test_contract.py tests/test_real_flows.py tests/test_real_builder.py tests/test_real_ownership.py -k real; \
	status=$$?; $(PY) -m integration.real_panda.harness down; \
	echo "real-server tier took $$(( $$(date +%s) - start )) s"; exit $$status

real-up: $(STAMP)
	$(PY) -m integration.real_panda.harness up

real-down: $(STAMP)
	$(PY) -m integration.real_panda.harness down

## Start the local PanDA server, run the example DAG panda_submit_and_wait against it, print the outcome.
demo: $(STAMP)
	$(PY) scripts/demo.py

## Run the local PanDA server in the foreground (prints the connection as its first line).
local-server: $(STAMP)
	$(PY) -m airflow_provider_panda.testing.server --port 8443

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(OLD_VENV) .demo .real_panda
