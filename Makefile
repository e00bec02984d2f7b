# signal-platform: every entry point a newcomer or CI needs.
PYTHON ?= python3.11
VENV := .venv
POLICY_VENV := policies/venv
CHECKOV_VENV := policies/.checkov-venv
PY := $(VENV)/bin/python
STACK ?= dev
PYTEST_ARGS ?=

.PHONY: setup plan check test lint format bench serve clean

# Idempotent: each venv is installed again only when its lock file changes. The lock files pin
# every package with its hashes (pip refuses anything else); the requirements*.txt beside them
# are their inputs (top-level pins): after editing one, `make lock`.
PIP_INSTALL := -m pip install --quiet --disable-pip-version-check
setup: $(VENV)/.installed $(VENV)/.editable $(POLICY_VENV)/.installed $(CHECKOV_VENV)/.installed

$(VENV)/.installed: requirements-dev.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) $(PIP_INSTALL) --require-hashes -r requirements-dev.lock
	@touch $@

# The project itself, editable: its commands (signal-platform, signal-service, signal-autoscaler,
# signal-anomaly-detector) on the venv's PATH. Its build backend comes from the lock (no build
# isolation, so nothing unhashed is fetched).
$(VENV)/.editable: pyproject.toml $(VENV)/.installed
	$(PY) $(PIP_INSTALL) --no-deps --no-build-isolation --editable .
	@touch $@

$(POLICY_VENV)/.installed: policies/requirements-dev.lock
	@test -x $(POLICY_VENV)/bin/python || $(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/python $(PIP_INSTALL) --require-hashes -r policies/requirements-dev.lock
	@touch $@

# Checkov, which tests/policies/test_checkov_parity.py runs beside the pack (own venv: its
# dependencies conflict with the pack's).
$(CHECKOV_VENV)/.installed: policies/requirements-checkov.lock
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python $(PIP_INSTALL) --require-hashes -r policies/requirements-checkov.lock
	@touch $@

# The lock files, resolved from their inputs for Linux and Python 3.11 (the machines, CI and the
# image) by uv, pinned in requirements-dev.txt. An existing lock keeps its versions where the
# inputs allow; `make lock LOCK_ARGS=--upgrade` (or --upgrade-package NAME) moves them. The
# development lock constrains the program's and the image's, so deploy and the image run the
# versions the tests ran; the pack's venvs resolve apart (protobuf 5).
LOCK_ARGS ?=
LOCK := $(VENV)/bin/uv pip compile --quiet --generate-hashes --no-emit-index-url \
	--python-version 3.11 --python-platform linux --custom-compile-command "make lock" $(LOCK_ARGS)
# $(call lock_file,INPUT,LOCK[,CONSTRAINTS]): compiled beside the lock from a copy of it (uv keeps
# the versions it finds there), replacing it only when it changed, so no venv reinstalls for nothing.
lock_file = cp $(2) $(2).new 2>/dev/null || true; \
	$(LOCK) $(1) $(if $(3),-c $(3)) -o $(2).new || { rm -f $(2).new; exit 1; }; \
	if cmp -s $(2).new $(2); then rm $(2).new; else mv $(2).new $(2); echo "$(2) updated"; fi
.PHONY: lock
lock: | $(VENV)/.installed
	@$(call lock_file,requirements-dev.txt,requirements-dev.lock)
	@$(call lock_file,requirements.txt,requirements.lock,requirements-dev.lock)
	@$(call lock_file,app/requirements.txt,app/requirements.lock,requirements-dev.lock)
	@$(call lock_file,app/requirements-build.txt,app/requirements-build.lock,requirements-dev.lock)
	@$(call lock_file,policies/requirements-dev.txt,policies/requirements-dev.lock)
	@$(call lock_file,policies/requirements.txt,policies/requirements.lock,policies/requirements-dev.lock)
	@$(call lock_file,policies/requirements-checkov.txt,policies/requirements-checkov.lock)

# Subprocesses (the policy pack, MLServer, CLI runs) measure coverage through the startup
# hook coverage installs in each venv, active only when COVERAGE_PROCESS_START is set.
# Coverage floors (percent of lines) for the parts whose correctness everything rests on.
COVERAGE_FLOOR := 90
COVERAGE_GATES := \
	engine:tools/engine.py,tools/mocks.py,tools/inventory.py,tools/input_check.py,tools/crd_models.py,tools/stack_file.py,tools/sdk_types.py,tools/program_venv.py \
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

# A stack's monthly cost per line item and region, and per trading signal (tools/cost/pricing.yaml).
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

# Each benchmark's --quick run; those with a picture write their figures to bench/results/*.json,
# which bench/plots.py draws last as the SVGs bench/RESULTS.md shows.
BENCH_RESULTS := bench/results
bench: proto model
	$(PY) bench/engine.py --quick --model-dir $(APP_MODEL) --json $(BENCH_RESULTS)/engine.json
	$(PY) bench/batching.py --quick --model-dir $(APP_MODEL)
	$(PY) bench/payload.py --quick
	$(PY) bench/quantize.py --quick --model-dir $(APP_MODEL)
	$(PY) bench/compression.py --quick
	$(PY) bench/load.py --quick
	$(PY) bench/shards.py --quick
	$(PY) bench/durability.py --quick --model-dir $(APP_MODEL)
	$(PY) bench/autoscale.py --quick --json $(BENCH_RESULTS)/autoscale.json
	$(PY) bench/alerting.py --quick
	$(PY) bench/spot.py --quick --json $(BENCH_RESULTS)/spot.json
	$(PY) bench/plan.py --quick
	$(PY) bench/plots.py --results $(BENCH_RESULTS)

clean:
	rm -rf $(VENV) $(POLICY_VENV) $(CHECKOV_VENV) .pytest_cache .ruff_cache .coverage artifacts plans
