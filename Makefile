# The commands people type. Workflows call these targets; the targets call the package's entry
# points, so everything CI does can be run here. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
LOCK := requirements/lock.txt
# Dependency groups installed into the venv (see pyproject.toml); serving alone: EXTRAS=serve
EXTRAS ?= train,serve,report,monitor,explain,dev
# Which torch build: cpu (PyTorch's CPU index: GitHub's CPU runners, ~1.5 GB), cuda (PyPI's
# default CUDA build, ~5 GB: GPU runners), empty (this machine's pip configuration decides).
TORCH ?=
# uv installs the lock in seconds; INSTALLER=pip (or no uv to be had) installs with pip instead.
INSTALLER ?= uv
# uv's version is pinned in the lock (dev group), so every machine installs with the same uv.
UV_VERSION := $(shell sed -n 's/^uv==\([^ ;]*\).*/\1/p' $(LOCK) | head -n 1)
# Extra pip arguments for the pip fallback, e.g. PIP_ARGS="--no-cache-dir"
PIP_ARGS ?=

# The Python that makes the venv, found before the venv goes first on PATH (its pip and its
# configuration are the machine's).
SYS_PYTHON := $(shell command -v $(PYTHON) 2>/dev/null || echo $(PYTHON))

# Stages run `python -m mlproject.<stage>`: the venv must come first on PATH for DVC's shell.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PYTHONDONTWRITEBYTECODE := 1

##@ Set-up and pipeline

# The venv starts without pip (uv fills it; pip comes from the lock). uv does not read pip's
# configuration, so requirements/uv_sources.py passes its find-links and indexes on.
$(BIN)/.installed: pyproject.toml $(LOCK)
	@$(SYS_PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is needed; set PYTHON=python3.x")'
	@test -x $(BIN)/python || { echo "creating $(VENV) with $$($(SYS_PYTHON) --version)"; $(SYS_PYTHON) -m venv --without-pip $(VENV); }
	@echo "installing pinned dependencies ($(EXTRAS)) from $(LOCK)$(if $(TORCH), with torch for $(TORCH))"
	@if [ "$(INSTALLER)" = uv ] && { test -x $(BIN)/uv || $(SYS_PYTHON) -m pip --python $(BIN)/python install \
	      --quiet --disable-pip-version-check "uv==$(UV_VERSION)" >/dev/null 2>&1; }; then \
	  sources=$$($(SYS_PYTHON) requirements/uv_sources.py --torch "$(TORCH)"); \
	  cert=$$($(SYS_PYTHON) requirements/uv_sources.py --cert); \
	  if [ -n "$$cert" ] && [ -z "$${SSL_CERT_FILE:-}" ]; then export SSL_CERT_FILE="$$cert"; fi; \
	  echo "+ uv pip install -c $(LOCK) $$sources -e .[$(EXTRAS)]"; \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python -c $(LOCK) $$sources -e ".[$(EXTRAS)]"; \
	else \
	  echo "uv is not available (INSTALLER=$(INSTALLER)): installing with pip, which is slower"; \
	  $(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --default-pip >/dev/null; \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check -c $(LOCK) \
	    $$($(SYS_PYTHON) requirements/uv_sources.py --torch "$(TORCH)" --pip-args) $(PIP_ARGS) -e ".[$(EXTRAS)]"; \
	fi
	@touch $@

.PHONY: install
install: $(BIN)/.installed ## Create .venv with the pinned versions (uv, pip as fallback; TORCH=cpu|cuda picks torch)

.PHONY: data
data: install ## Make data/ present: DVC remote if reachable, else the embedded demo data
	python -m mlproject.pipeline.data

.PHONY: repro
repro: data ## Run the DVC pipeline (pulls outputs when a remote is set), print stages and metrics
	python -m mlproject.report.ci repro
	@echo
	dvc metrics show --precision 4 reports/eval/metrics.json

.PHONY: params
params: install ## Rewrite params.yaml from conf/ (commit both)
	python -m mlproject.pipeline.config

.PHONY: exp
exp: data ## Run a DVC experiment with Hydra overrides: make exp ARGS="-S model=mlp -S train.lr=0.01"
	dvc exp run $(ARGS)
	dvc exp show --only-changed --md

##@ Experiments: sweeps and hyperparameter search (docs/experiments.md)

# sweep: ARGS=Hydra sweep overrides (-S 'key=v1,v2' ...), JOBS=queue workers, SWEEP_TIMEOUT=seconds (0: none)
JOBS ?= 1
SWEEP_TIMEOUT ?= 0
# hpo: TRIALS=finished trials wanted in all (a rerun continues the study), SPACE=search space file
TRIALS ?= 20
SPACE ?= conf/hpo/default.yaml

.PHONY: sweep
sweep: data ## Grid sweep as DVC experiments: make sweep ARGS="-S 'train.lr=0.001,0.01' -S 'model=cnn,mlp'" JOBS=2
	python -m mlproject.experiments.sweep run $(ARGS) --jobs $(JOBS) --timeout $(SWEEP_TIMEOUT)

.PHONY: hpo
hpo: data ## Optuna search, each trial a DVC experiment: make hpo TRIALS=20 JOBS=1 SPACE=conf/hpo/default.yaml
	python -m mlproject.experiments.hpo --trials $(TRIALS) --jobs $(JOBS) --space $(SPACE)

.PHONY: bench-sweep
bench-sweep: data ## Benchmark: 4-experiment sweep with JOBS=2 vs one by one; HPO trial vs plain dvc exp run
	python benchmarks/scale_sweep.py $(ARGS)

# Steps of .github/workflows/sweep.yml. SHARD=i of SHARDS (matrix jobs); ARGS as for sweep.
SHARD ?= 0
SHARDS ?= 1
.PHONY: ci-sweep-plan ci-sweep-shard ci-sweep-collect ci-sweep-pr
# Standard library only: the plan job has python3 and the checkout, no environment.
ci-sweep-plan: ## CI: the matrix's shards, [0, ..., SHARDS-1] -> $GITHUB_OUTPUT shards=
	PYTHONPATH=src $(PYTHON) -m mlproject.experiments.ci plan --total $(SHARDS)

ci-sweep-shard: data ## CI: run share SHARD of SHARDS of the grid (ARGS) or TRIALS/SHARDS trials, push them (dvc exp push origin)
	python -m mlproject.experiments.ci shard --index $(SHARD) --total $(SHARDS) --trials $(TRIALS) $(ARGS)

ci-sweep-collect: ## CI: fetch every shard's experiments, rank them, write the job summary
	python -m mlproject.experiments.ci collect $(ARGS)

ci-sweep-pr: ## CI: branch the best experiment (dvc exp branch) and open a pull request (cml pr create)
	python -m mlproject.experiments.ci pr $(ARGS)

##@ Quality

.PHONY: test
test: install ## Run the whole test suite (unit, integration, end-to-end)
	python -m pytest $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: install ## Run the tests that take seconds (no pipeline runs)
	python -m pytest -m "not slow" $(PYTEST_ARGS)

.PHONY: lint
lint: install lint-workflows lint-k8s lint-alerts ## Lint the code, the workflows, the config, the deploy manifests and alert rules
	ruff check src tests benchmarks
	ruff format --check src tests benchmarks || { echo "run: ruff format src tests benchmarks"; exit 1; }
	python -m mlproject.pipeline.config --check

.PHONY: bench
bench: data ## Benchmark: training loop vs bare loop, pinned vs unpinned training, pipeline, no-op repro, ONNX vs PyTorch
	python benchmarks/pipeline.py

##@ Pull-request report and quality gate

# The report's base revision: default the merge-base with the PR's base branch (CI) or main.
BASE ?=
REPORT_DIR := reports/pr
# Pinned CML (npm @dvcorg/cml) for the comment and cloud-runner jobs.
CML_VERSION ?= 0.20.6
WORKFLOWS := $(wildcard .github/workflows/*.yml)

.PHONY: report
report: install ## PR report vs base (BASE=<rev>): params, metric deltas, gate, plots -> reports/pr/report.md
	python -m mlproject.report build $(if $(BASE),--base $(BASE))

.PHONY: gate
gate: install ## Quality gate vs base (BASE=<rev>): floors and max regression from gate: in conf/; exit 1 on fail
	python -m mlproject.report gate $(if $(BASE),--base $(BASE))

.PHONY: lint-workflows
lint-workflows: install ## Validate .github/ offline: workflow schema, zizmor (security), actionlint
	check-jsonschema --builtin-schema vendor.github-workflows $(WORKFLOWS)
	check-jsonschema --builtin-schema vendor.github-actions .github/actions/*/action.yml
	check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml
	zizmor --offline --config .github/zizmor.yml --min-severity medium .github/workflows .github/actions
	actionlint -no-color $(WORKFLOWS)

# act: WORKFLOW=<file in .github/workflows> EVENT=<event> [EVENT_JSON=<payload>] [ACT_ARGS=...]
WORKFLOW ?= ci.yml
EVENT ?= push
EVENT_JSON ?=
ACT_ARGS ?=

.PHONY: act
act: install ## Run a workflow here with act: make act WORKFLOW=pr.yml EVENT=pull_request [EVENT_JSON=f] [ACT_ARGS=--plan]
	python -m mlproject.ops.act "$(WORKFLOW)" "$(EVENT)" $(if $(EVENT_JSON),--event-json "$(EVENT_JSON)") $(ACT_ARGS)

.PHONY: pr-local
pr-local: ## Run the PR workflow (pr.yml) here with act: this branch as a PR into main; cml recorded
	$(MAKE) act WORKFLOW=pr.yml EVENT=pull_request

.PHONY: bench-report
bench-report: data ## Benchmark: make report (outputs cached) and the PR workflow's steps from a clean clone
	python benchmarks/report.py

# Steps of .github/workflows/pr-loop.yml (the composite action has run `make install` already).
.PHONY: ci-pr-repro ci-pr-report ci-pr-summary ci-pr-gate ci-pr-comment ci-install-cml ci-test-gpu ci-gpu-runner
ci-pr-repro: ## CI: make data present, then dvc repro (pulling cached outputs when a remote is set)
	python -m mlproject.pipeline.data
	python -m mlproject.report.ci repro

ci-pr-report: ## CI: build the report (the gate's verdict is in it; the gate step fails the job)
	python -m mlproject.report build $(if $(BASE),--base $(BASE))

ci-pr-summary: ## CI: append the report to the job summary
	python -m mlproject.report.ci summary

ci-pr-gate: ## CI: fail when the quality gate in reports/pr/report.json failed
	python -m mlproject.report gate --from-report $(REPORT_DIR)/report.json

# Standard library only: the comment job has python3 and the report artifact, no environment.
ci-pr-comment: ## CI: post or update the PR's one report comment with CML
	PYTHONPATH=src $(PYTHON) -m mlproject.report.ci comment

.PHONY: ci-system-packages
ci-system-packages: ## CI: install the system packages lint and tests need (prometheus/promtool, sudo), as .ci/run does
	bash .ci/run --setup-only

ci-install-cml: ## CI: install the pinned CML CLI with npm (kept when a runner already has cml)
	command -v cml >/dev/null || npm install --global --no-fund --no-audit @dvcorg/cml@$(CML_VERSION)

# pytest exits 5 when no test is marked gpu: nothing to run is not a failure.
ci-test-gpu: ## CI: run the tests marked gpu (on a GPU runner)
	python -m pytest -m gpu $(PYTEST_ARGS) || test $$? -eq 5

ci-gpu-runner: ## CI: launch a cloud GPU runner with CML (--single, idle timeout)
	PYTHONPATH=src $(PYTHON) -m mlproject.report.ci launch-runner

##@ Serving

MODEL ?= models/model.onnx
CARD ?= models/model_card.json
HOST ?= 127.0.0.1
PORT ?= 8000
IMAGE ?= mlproject-serve:latest

.PHONY: serve
serve: install ## Serve the ONNX model: Open Inference Protocol + /predict (HOST, PORT, MODEL, CARD)
	python -m mlproject.serve --model $(MODEL) --card $(CARD) --host $(HOST) --port $(PORT)

.PHONY: bench-serve
bench-serve: install ## Benchmark serving: req/s, p50/p99 vs the bare stack and eager PyTorch (wrk)
	python benchmarks/serve.py $(ARGS)

.PHONY: docker-build
docker-build: ## Build the serving image (IMAGE); without a Docker engine, print the command
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  echo "docker build -t $(IMAGE) ."; docker build -t $(IMAGE) .; \
	else \
	  echo "No Docker engine here. Build the image where one runs:"; \
	  echo "  docker build -t $(IMAGE) ."; \
	fi

##@ Operations: Kubernetes, alerts, DVC remote, MLflow

STAGE_K8S ?= staging

.PHONY: lint-k8s
lint-k8s: install ## Validate deploy/k8s (base + rendered overlays) and deploy/kserve offline
	python -m mlproject.ops.deploy validate

.PHONY: k8s-render
k8s-render: install ## Print a stage's manifests as kubectl applies them: make k8s-render STAGE_K8S=prod
	python -m mlproject.ops.deploy render $(STAGE_K8S)

.PHONY: lint-alerts
lint-alerts: install ## Check the Prometheus alert rules (promtool check + unit tests) and the reference shares
	python -m mlproject.ops.deploy reference-rules --check
	promtool check rules deploy/prometheus/rules.yml deploy/prometheus/reference.rules.yml
	promtool test rules deploy/prometheus/rules.test.yml

.PHONY: alerts-reference
alerts-reference: install ## Regenerate deploy/prometheus/reference.rules.yml from models/reference_profile.json
	python -m mlproject.ops.deploy reference-rules

.PHONY: track
track: install ## Log the pipeline's last results to MLflow (MLFLOW_TRACKING_URI or tracking.mlflow)
	python -m mlproject.pipeline.tracking log

.PHONY: bench-remote
bench-remote: install ## Benchmark: S3 round trip (moto on loopback): push, pull, make repro from a fresh clone
	python benchmarks/remote.py $(ARGS)

.PHONY: remote-check
remote-check: install ## Which DVC remote is configured and whether it answers (exit 1 if not)
	python -m mlproject.ops.remote check

.PHONY: lint-docker
lint-docker: install ## Lint the Dockerfile (hadolint)
	hadolint Dockerfile

##@ Monitoring, retraining and registry

# monitor: LOGS=<folder with predictions.jsonl> or DATA=<image folder>; the report goes to MONITOR_OUT.
LOGS ?=
DATA ?=
MONITOR_OUT ?= reports/monitor
MONITOR_SOURCE = $(if $(LOGS),--logs "$(LOGS)",$(if $(DATA),--data "$(DATA)"))
# registry: VERSION=v1.2.0 or BUMP=patch|minor|major; STAGE=prod; REV=<version or git revision>;
# REPO=<git URL or path> to fetch from; MODEL_OUT=<folder>; PUSH=1 also pushes tags and the model.
VERSION ?=
BUMP ?= patch
STAGE ?=
REV ?=
REPO ?= .
MODEL_OUT ?= dist/model
PUSH ?=

.PHONY: monitor
monitor: install ## Drift report vs the training profile: make monitor LOGS=<dir> | DATA=<dir>; exit 1 on drift
	python -m mlproject.monitor.drift $(MONITOR_SOURCE) --out "$(MONITOR_OUT)"

.PHONY: monitor-retrain
monitor-retrain: install ## Like monitor; on drift also start the retraining workflow (gh, GH_TOKEN)
	python -m mlproject.monitor.drift $(MONITOR_SOURCE) --out "$(MONITOR_OUT)" --trigger-retrain

.PHONY: bench-monitor
bench-monitor: install ## Benchmark: drift check over 10,000 logged records (target <= 5 s)
	python benchmarks/monitor.py

.PHONY: register
register: install ## Register the committed model (tag name@vX.Y.Z): [VERSION=v1.2.0 | BUMP=minor] [PUSH=1]
	python -m mlproject.ops.registry register $(if $(VERSION),--version "$(VERSION)") --bump "$(BUMP)" $(if $(PUSH),--push)

.PHONY: promote
promote: install ## Assign a stage (tag name#stage#N): make promote STAGE=prod [VERSION=v1.2.0] [PUSH=1]
	python -m mlproject.ops.registry promote --stage "$(STAGE)" $(if $(VERSION),--version "$(VERSION)") $(if $(PUSH),--push)

.PHONY: fetch-model
fetch-model: install ## Download a registered model, card, profile: make fetch-model STAGE=prod | REV=v1.2.0 [REPO=url]
	python -m mlproject.ops.registry fetch $(if $(STAGE),--stage "$(STAGE)",--rev "$(REV)") --repo "$(REPO)" --out "$(MODEL_OUT)"

.PHONY: registry
registry: install ## Show the model versions and their stages (gto show)
	python -m mlproject.ops.registry show

.PHONY: retrain-local
retrain-local: ## Run the retraining workflow (retrain.yml) here with act, as scheduled; cml recorded
	$(MAKE) act WORKFLOW=retrain.yml EVENT=schedule

# Steps of .github/workflows/retrain.yml (the composite action has run `make install` already).
.PHONY: retrain-data retrain-repro retrain-report retrain-pr
retrain-data: ## CI: the newest data version (dvc update for an imported dataset, else data.dvc's)
	python -m mlproject.ops.retrain data

retrain-repro: ## CI: retrain: the whole pipeline on that data (dvc repro)
	dvc repro

retrain-report: ## CI: the report against the production model (#prod tag's commit, else main)
	python -m mlproject.ops.retrain report

retrain-pr: ## CI: if the gate passed, dvc push and open or update the pull request (cml pr create)
	python -m mlproject.ops.retrain pr

# Steps of .github/workflows/release.yml; TAG is the registry tag (classifier@v1.2.0, classifier#prod#3).
TAG ?=
# RELEASE_IMAGE: the released image's name (default ghcr.io/<owner>/<repo>, lower-case).
RELEASE_IMAGE ?=
export TAG RELEASE_IMAGE
.PHONY: release-info release-assets release-publish release-image release-smoke release-push release-pull release-deploy ci-docker-engine
release-info: ## CI: what TAG releases (version, commit, stage; deploy or not) -> $GITHUB_OUTPUT
	python -m mlproject.ops.release info

release-assets: ## CI: model, card, profile, notes, SHA256SUMS of TAG -> dist/release (fetch, else rebuild)
	python -m mlproject.ops.release assets

release-publish: ## CI: create or update the GitHub release of TAG's version with the assets (gh)
	python -m mlproject.ops.release publish

release-image: ## CI: docker build the serving image with the released model
	python -m mlproject.ops.release image

release-smoke: ## CI: run the image; check health, one OIP inference and one /predict
	python -m mlproject.ops.release smoke

release-push: ## CI: push the image to the GitHub container registry
	python -m mlproject.ops.release push

release-pull: ## CI: docker pull the image of TAG's version (the deploy job)
	python -m mlproject.ops.release pull

release-deploy: ## CI: on promotion to prod, move the image's :prod tag (and call DEPLOY_WEBHOOK_URL)
	python -m mlproject.ops.release deploy

# GITHUB_OUTPUT engine=true|false; the image steps run only with an engine.
ci-docker-engine: ## CI: is a Docker engine reachable? (-> $GITHUB_OUTPUT engine=true|false; says so when not)
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  echo "Docker engine: present"; echo "engine=true" >> "$${GITHUB_OUTPUT:-/dev/null}"; \
	else \
	  echo "::notice::No Docker engine on this runner: the image build, smoke test, push and deploy are skipped."; \
	  echo "engine=false" >> "$${GITHUB_OUTPUT:-/dev/null}"; \
	fi

##@ Housekeeping

.PHONY: lock
lock: install ## Re-resolve requirements/lock.txt from pyproject.toml (needs network)
	uv pip compile pyproject.toml --universal --python-version 3.10 --quiet \
	  --custom-compile-command "make lock" --annotation-style line \
	  $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) -o $(LOCK)

.PHONY: clean
clean: ## Remove pipeline outputs (not data/, not the DVC cache, not .venv)
	rm -rf outputs models/model.onnx reports/train reports/eval

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^##@/ {printf "\n%s\n", substr($$0, 5)} \
	  /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

comma := ,
