# signal-platform: every entry point a newcomer or CI needs.
PYTHON ?= python3.11
VENV := .venv
POLICY_VENV := policies/venv
PY := $(VENV)/bin/python
STACK ?= dev
PYTEST_ARGS ?=

.PHONY: setup plan check test lint format bench serve clean

# Idempotent: each venv is rebuilt only when its requirements change.
setup: $(VENV)/.installed $(POLICY_VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt app/requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(POLICY_VENV)/.installed: policies/requirements.txt
	@test -x $(POLICY_VENV)/bin/python || $(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r policies/requirements.txt
	@touch $@

# The main job: the offline plan of a stack (no cloud credentials, no Pulumi CLI).
plan: setup
	$(PY) -m tools plan --stack $(STACK)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pyright

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(POLICY_VENV) .pytest_cache .ruff_cache .coverage artifacts plans
