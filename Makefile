# signal-platform: every entry point a newcomer or CI needs.
PYTHON ?= python3.11
VENV := .venv
POLICY_VENV := policies/venv
CHECKOV_VENV := policies/.checkov-venv
PY := $(VENV)/bin/python
STACK ?= dev
PYTEST_ARGS ?=

.PHONY: setup plan check test lint format bench serve clean

# Idempotent: each venv is rebuilt only when its requirements change.
setup: $(VENV)/.installed $(POLICY_VENV)/.installed $(CHECKOV_VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt app/requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(POLICY_VENV)/.installed: policies/requirements.txt policies/requirements-dev.txt
	@test -x $(POLICY_VENV)/bin/python || $(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r policies/requirements-dev.txt
	@touch $@

# Checkov, which tests/policies/test_checkov_parity.py runs beside the pack (own venv: its
# dependencies conflict with the pack's).
$(CHECKOV_VENV)/.installed: policies/requirements-checkov.txt
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r policies/requirements-checkov.txt
	@touch $@

# Subprocesses (the policy pack, MLServer, CLI runs) measure coverage through the startup
# hook coverage installs in each venv, active only when COVERAGE_PROCESS_START is set.
# Coverage floors (percent of lines) for the parts whose correctness everything rests on.
COVERAGE_FLOOR := 90
COVERAGE_GATES := \
	engine:tools/engine.py,tools/mocks.py,tools/inventory.py,tools/input_check.py,tools/crd_models.py \
	config:infra/config/*.py,app/config_errors.py \
	rules:policies/rules/*.py

# The main job: the offline plan of a stack (no cloud credentials, no Pulumi CLI).
plan: setup
	$(PY) -m tools plan --stack $(STACK)

# The policy pack over the offline plan: what `pulumi preview --policy-pack policies` enforces.
check: setup
	$(PY) -m tools check --stack $(STACK)

# What a change does to each stack: both sides planned offline (BASE in a temporary git
# worktree), with the policy findings and cost that change; also written as a PR comment.
BASE ?= main
STACKS ?= dev prod
.PHONY: diff cost
diff: setup
	$(PY) -m tools diff --base $(BASE) $(foreach s,$(STACKS),--stack $(s)) --markdown plans/diff.md

# A stack's monthly cost per line item and region, and per trading signal (tools/pricing.yaml).
cost: setup
	$(PY) -m tools cost --stack $(STACK) --json plans/cost-$(STACK).json

# The tests, with line coverage over every process they start, and the coverage floors.
test: setup
	@rm -f .coverage .coverage.*
	COVERAGE_PROCESS_START=$(CURDIR)/pyproject.toml COVERAGE_ROOT=$(CURDIR) \
		$(PY) -m coverage run -m pytest $(PYTEST_ARGS)
	@$(PY) -m coverage combine -q
	@$(PY) -m coverage report --skip-covered --skip-empty
	@for gate in $(COVERAGE_GATES); do \
		name=$${gate%%:*}; files=$${gate#*:}; \
		total=$$($(PY) -m coverage report --include="$$files" --format=total); \
		echo "coverage of $$name: $$total% (floor $(COVERAGE_FLOOR)%)"; \
		[ "$$total" -ge $(COVERAGE_FLOOR) ] || { echo "coverage of $$name is under $(COVERAGE_FLOOR)%"; exit 1; }; \
	done

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pyright

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The signal service (app/): gRPC stubs, the model, the local server and its benchmarks.
.PHONY: proto model
APP_MODEL := artifacts/model

proto: setup
	$(PY) -m app.proto

model: $(APP_MODEL)/manifest.json

$(APP_MODEL)/manifest.json: app/model/*.py app/synthetic.py app/features.py app/state.py | setup
	$(PY) -m app.model build --out $(APP_MODEL)

serve: proto model
	$(PY) -m app serve --model-dir $(APP_MODEL)

bench: proto model
	$(PY) bench/engine.py --quick --model-dir $(APP_MODEL)
	$(PY) bench/batching.py --quick --model-dir $(APP_MODEL)
	$(PY) bench/payload.py --quick
	$(PY) bench/quantize.py --quick --model-dir $(APP_MODEL)
	$(PY) bench/compression.py --quick
	$(PY) bench/load.py --quick
	$(PY) bench/autoscale.py --quick
	$(PY) bench/alerting.py --quick
	$(PY) bench/spot.py --quick

clean:
	rm -rf $(VENV) $(POLICY_VENV) $(CHECKOV_VENV) .pytest_cache .ruff_cache .coverage artifacts plans
