# The two commands of the README: `make demo` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The oldest Airflow that pyproject.toml admits, tested in its own virtualenv.
AIRFLOW_OLDEST := $(shell sed -n 's/.*"apache-airflow>=\([0-9.]*\)".*/\1/p' pyproject.toml)
OLD_VENV := .venv-airflow-$(AIRFLOW_OLDEST)
# Pins that make that release install today (as Airflow's constraint files do): scripts/airflow_constraints.py.
OLD_CONSTRAINTS := constraints/airflow-$(AIRFLOW_OLDEST).txt
OLD_STAMP := $(OLD_VENV)/.installed-$(shell cat pyproject.toml $(OLD_CONSTRAINTS) | cksum | cut -d' ' -f1)

.PHONY: install test test-unit docs test-stress test-oldest test-browser browser-deps constraints test-real real-up real-down demo lint local-server clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

## Run the test suite against the local PanDA server (what CI runs first): tests/unit (the pure modules,
## seconds), then end to end through real HTTP and real Airflow; the docs' examples and the docs build too.
test: $(STAMP)
	$(PY) -m pytest -q -n 3

## Only the unit tests of the pure modules (no server, no Airflow run): seconds.
test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

## The docs as a site in site/ (MkDocs, strict: a warning fails the build).
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict -d site

## The flake check: the same suite with a busy process on every core (it must pass like this too).
test-stress: $(STAMP)
	$(PY) scripts/with_cpu_hog.py -- $(PY) -m pytest -q -n 3

## The same suite on the oldest Airflow release pyproject.toml admits (`make test-airflow-3.2.0`: another).
$(OLD_STAMP): pyproject.toml $(OLD_CONSTRAINTS)
	test -x $(OLD_VENV)/bin/python || $(PYTHON) -m venv $(OLD_VENV)
	$(OLD_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLD_VENV)/bin/python -m pip install -q -c $(OLD_CONSTRAINTS) 'apache-airflow==$(AIRFLOW_OLDEST)' -e '.[test]'
	rm -f $(OLD_VENV)/.installed-* && touch $@

# What differs between Airflow releases, on the oldest: the unit layer, and the end-to-end tests whose
# subject is an Airflow surface (deferral and resumption, the sensor's modes, the trigger and its
# connection, templates and the decorator, the connection form, the task state store, masking, assets,
# `airflow dags test` on one example with a mapped fan-out and one that fails). The tests whose subject
# is the provider's own logic through the same surfaces (the stale rule, marks and chaining, the poller,
# the HTTP client, the local server, the builder against prun, the other examples) and the
# real-cluster tier run on the newest Airflow only.
OLDEST_TESTS := tests/unit tests/test_operators.py tests/test_trigger.py tests/test_connection_form.py \
	tests/test_connection_test_button.py tests/test_panda_view.py \
	tests/test_credentials.py tests/test_ownership.py tests/test_not_found.py tests/test_outputs.py \
	tests/test_bad_input.py tests/test_secrets.py \
	tests/test_example_dags.py::test_fan_out_failure tests/test_example_dags.py::test_submit_and_wait_success \
	$(foreach t,operator_submits_a_templated_builder_with_a_sandbox operator_takes_the_builder_as_a_dict \
	  operator_needs_exactly_one_description bad_rendered_name_fails_the_task_before_any_request \
	  decorator_submits_the_builder_the_function_returns decorator_bad_description_fails_before_any_request \
	  operator_takes_builders_from_an_upstream_task_and_maps_over_them the_old_names_still_work_and_say_the_new_ones \
	  arguments_without_effect_warn_at_parse_time,tests/test_task_builder.py::test_$(t))

test-oldest: $(OLD_STAMP)
	$(OLD_VENV)/bin/python -c 'import airflow; print("Airflow", airflow.__version__)'
	$(OLD_VENV)/bin/python -m pytest -q -n 3 -m 'not cluster' $(OLDEST_TESTS)

test-airflow-%:
	$(MAKE) test-oldest AIRFLOW_OLDEST=$*

## Pins for one Airflow release as PyPI stood on a date: make constraints AIRFLOW=3.2.0 DATE=2026-04-10
constraints: $(STAMP)
	$(PY) scripts/airflow_constraints.py $(AIRFLOW) $(DATE)

## Airflow's UI in headless Chromium: a PanDA connection made with the form, used by panda_submit_and_wait,
## its monitor link followed (screenshots in test-artifacts/browser/). Installs Debian's chromium first.
browser-deps:
	command -v chromedriver >/dev/null && command -v chromium >/dev/null || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)
	$(PY) -c 'import selenium' 2>/dev/null || $(PY) -m pip install -q -e '.[test,browser]'

test-browser: $(STAMP) browser-deps
	@start=$$(date +%s); \
	BROWSER_TEST=1 $(PY) -m pytest -q tests/test_browser.py; status=$$?; \
	echo "browser tier took $$(( $$(date +%s) - start )) s"; exit $$status

## The contract suite and the operators' flows against the real panda-server + JEDI (needs root).
test-real: $(STAMP)
	@start=$$(date +%s); \
	$(PY) -m integration.real_panda.harness up && \
	REAL_PANDA=1 REAL_PANDA_KEEP=1 $(PY) -m pytest -q -n 2 tests/test_contract.py tests/test_real_flows.py tests/test_real_builder.py tests/test_real_ownership.py tests/test_real_waits.py tests/test_real_pipelines.py tests/test_outputs.py -k real; \
	status=$$?; $(PY) -m integration.real_panda.harness down; \
	echo "real-server tier took $$(( $$(date +%s) - start )) s"; exit $$status

real-up: $(STAMP)
	$(PY) -m integration.real_panda.harness up

real-down: $(STAMP)
	$(PY) -m integration.real_panda.harness down

## Airflow as deployed (PostgreSQL 15, Redis, CeleryExecutor: 2 workers, 2 triggerers) with the local PanDA
## server, all on 127.0.0.1 under .deploy/ (docs/deployment.md). Installs Debian's redis-server first.
.PHONY: deploy-deps deploy-up deploy-down test-deploy bench-deploy
deploy-deps: $(STAMP)
	command -v redis-server >/dev/null || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server)
	$(PY) -c 'import airflow.providers.celery, psycopg2, asyncpg; from celery.backends.database import retry' 2>/dev/null || $(PY) -m pip install -q -e '.[test,deploy]'

deploy-up: deploy-deps
	$(PY) -m integration.deploy up

deploy-down:
	$(PY) -m integration.deploy down

## The scale test with faults on that tier (its own, in .deploy/test): >= 300 deferred waits, a triggerer
## and a worker SIGKILLed, a minute's outage of the path to PanDA; then the early-trigger check.
test-deploy: deploy-deps
	@start=$$(date +%s); \
	DEPLOY_TEST=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_deployment.py; status=$$?; \
	echo "deployment tier took $$(( $$(date +%s) - start )) s"; exit $$status

## Requests per interval, triggerer CPU and RSS, delay to success: 100 / 300 waits, shared poller vs per-task.
bench-deploy: deploy-deps
	$(PY) bench/deploy_scale.py $(BENCH_ARGS)

## Start the local PanDA server, run the example DAG panda_submit_and_wait against it, print the outcome.
demo: $(STAMP)
	$(PY) scripts/demo.py

## Run the local PanDA server in the foreground (prints the connection as its first line).
local-server: $(STAMP)
	@$(PY) -m airflow_provider_panda.testing.server --port 8443

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(OLD_VENV) .demo .real_panda test-artifacts site

## The mutation check: each promise-breaking change in scripts/mutants.py applied to a scratch copy,
## the tests that must notice it run; prints caught / survived per change (all must be caught).
.PHONY: mutants
mutants: $(STAMP)
	$(PY) scripts/mutants.py
