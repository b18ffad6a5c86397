# The commands people type. Workflows call these targets; the targets call the package's entry
# points, so everything CI does can be run here. `make help` lists what people type, `make help-ci`
# the steps the workflows run: a target with a `## description` is listed under the `##@ Section`
# above it, and sections whose name starts with "CI" go to `make help-ci`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
LOCK := requirements/lock.txt
# Dependency groups installed into the venv (see pyproject.toml); serving alone: EXTRAS=serve
EXTRAS ?= train,serve,report,monitor,explain,docs,dev
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

# Stages run `python -m mlproject.pipeline <stage>`: the venv must come first on PATH for DVC's shell.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
# CML (every target that runs cml: the PR comment, cloud runners, retraining and sweep PRs)
# sends usage telemetry unless told not to.
export ITERATIVE_DO_NOT_TRACK := 1
# Compiled bytecode goes under the venv, not beside the sources: written once, then every stage,
# DVC and test subprocess loads torch, sklearn and DVC from it (compiling them from source each
# time cost ~5-9 s per stage). An inherited PYTHONDONTWRITEBYTECODE=1 would undo that: emptied here.
export PYTHONPYCACHEPREFIX := $(abspath $(VENV))/pycache
export PYTHONDONTWRITEBYTECODE :=

##@ Set-up

# The venv starts without pip (uv fills it; pip comes from the lock). requirements/uv.sh finds
# the pinned uv (the venv's, PATH's, or one kept per machine in ~/.cache/mlproject). uv does not
# read pip's configuration, so requirements/uv_sources.py passes its find-links and indexes on.
# Every version is pinned, so uv first installs from its cache alone (--offline: no index is
# asked, 2 s less), and asks the indexes only when something is not cached yet.
# VENV_PREBUILT=1: the venv is installed already (make act's jobs use the caller's through a view,
# in a copy whose fresh dates make the lock look newer than it): nothing to compare against.
$(BIN)/.installed: $(if $(filter 1,$(VENV_PREBUILT)),,pyproject.toml $(LOCK))
	@$(SYS_PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is needed; set PYTHON=python3.x")'
	@test -x $(BIN)/python || { echo "creating $(VENV) with $$($(SYS_PYTHON) --version)"; $(SYS_PYTHON) -m venv --without-pip $(VENV); }
	@echo "installing pinned dependencies ($(EXTRAS)) from $(LOCK)$(if $(TORCH), with torch for $(TORCH))"
	@if [ "$(INSTALLER)" = uv ] && uv=$$(requirements/uv.sh "$(UV_VERSION)" $(BIN) $(SYS_PYTHON)); then \
	  eval "$$($(SYS_PYTHON) requirements/uv_sources.py --torch "$(TORCH)" --shell)"; \
	  if [ -n "$$cert" ] && [ -z "$${SSL_CERT_FILE:-}" ]; then export SSL_CERT_FILE="$$cert"; fi; \
	  echo "+ uv pip install -c $(LOCK) $$sources -e .[$(EXTRAS)]"; \
	  install=("$$uv" pip install --quiet --python $(BIN)/python -c $(LOCK) $$sources -e ".[$(EXTRAS)]"); \
	  "$${install[@]}" --offline 2>/dev/null || "$${install[@]}"; \
	else \
	  echo "uv is not available (INSTALLER=$(INSTALLER)): installing with pip, which is slower"; \
	  $(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --default-pip >/dev/null; \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check -c $(LOCK) \
	    $$($(SYS_PYTHON) requirements/uv_sources.py --torch "$(TORCH)" --pip-args) $(PIP_ARGS) -e ".[$(EXTRAS)]"; \
	fi
	@touch $@
	@# New bytecode is compiled in the background, on a core the first `make repro` leaves idle.
	@( nice -n 10 $(BIN)/python -m mlproject.pipeline.warm >/dev/null 2>&1 & )

# uv, pip as fallback (INSTALLER=pip); TORCH=cpu|cuda picks the torch build; EXTRAS the groups.
.PHONY: install
install: $(BIN)/.installed ## Create .venv with the pinned versions (TORCH=cpu|cuda)

.PHONY: data
data: install ## Make data/ present: DVC remote, else the demo data
	python -m mlproject.pipeline.data

.PHONY: params
params: install ## Rewrite params.yaml from conf/ (commit both)
	python -m mlproject.pipeline.config

.PHONY: remote-check
remote-check: install ## Which DVC remote is configured and whether it answers
	python -m mlproject.ops.remote check

.PHONY: lock
lock: install ## Re-resolve requirements/lock.txt (network)
	uv pip compile pyproject.toml --universal --python-version 3.10 --quiet \
	  --custom-compile-command "make lock" --annotation-style line \
	  $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) -o $(LOCK)

.PHONY: clean
clean: ## Remove pipeline outputs (not data/, the DVC cache or .venv)
	rm -rf outputs models/model.onnx reports/train reports/eval

# `##@ Section` starts a section; `target: ## text` lists a target in it. CI=1 lists the sections
# named "CI ..." (make help-ci), CI=0 the others (make help).
HELP_AWK = /^\#\#@ / {sec = substr($$0, 5); show = ((sec ~ /^CI/) == ci); if (show) printf "\n%s\n", sec} \
  show && /^[a-zA-Z0-9_-]+:.*\#\# / {split($$0, p, ":.*\#\# "); printf "  make %-18s %s\n", p[1], p[2]}

.PHONY: help help-ci
help: ## The commands people type (this list)
	@awk -v ci=0 '$(HELP_AWK)' $(MAKEFILE_LIST)
	@echo; echo "The steps CI runs: make help-ci. Docs: docs/ (make docs builds the site)."

help-ci: ## The steps the workflows run
	@awk -v ci=1 '$(HELP_AWK)' $(MAKEFILE_LIST)

##@ Pipeline

# With a DVC remote: dvc repro --pull (outputs come from the remote), else reproduce here.
.PHONY: repro
repro: data ## Run the DVC pipeline, print the metrics
	python -m mlproject.report.ci repro
	@echo
	dvc metrics show --precision 4 reports/eval/metrics.json

##@ Experiments

.PHONY: exp
exp: data ## A DVC experiment: ARGS="-S model=mlp -S train.lr=0.01"
	dvc exp run $(ARGS)
	dvc exp show --only-changed --md

# sweep: ARGS=Hydra sweep overrides (-S 'key=v1,v2' ...), JOBS=queue workers, SWEEP_TIMEOUT=seconds (0: none)
JOBS ?= 1
SWEEP_TIMEOUT ?= 0
# hpo: TRIALS=finished trials wanted in all (a rerun continues the study), SPACE=search space file
TRIALS ?= 20
SPACE ?= conf/hpo/default.yaml

.PHONY: sweep
sweep: data ## Grid sweep as DVC experiments: ARGS="-S 'train.lr=0.001,0.01'"
	python -m mlproject.experiments.sweep run $(ARGS) --jobs $(JOBS) --timeout $(SWEEP_TIMEOUT)

.PHONY: hpo
hpo: data ## Optuna search, a DVC experiment per trial: TRIALS=20 SPACE=...
	python -m mlproject.experiments.hpo --trials $(TRIALS) --jobs $(JOBS) --space $(SPACE)

##@ Pull-request report and quality gate

# The report's base revision: default the merge-base with the PR's base branch (CI) or main.
BASE ?=
REPORT_DIR := reports/pr
# Pinned CML (npm @dvcorg/cml) for the comment and cloud-runner jobs.
CML_VERSION ?= 0.20.6
WORKFLOWS := $(wildcard .github/workflows/*.yml)

.PHONY: report
report: install ## PR report vs BASE=<rev> (default main) -> reports/pr/
	python -m mlproject.report build $(if $(BASE),--base $(BASE))

# Floors and max regression come from gate: in conf/config.yaml.
.PHONY: gate
gate: install ## Quality gate vs BASE=<rev>; exit 1 when it fails
	python -m mlproject.report gate $(if $(BASE),--base $(BASE))

# act: WORKFLOW=<file in .github/workflows> EVENT=<event> [EVENT_JSON=<payload>] [ACT_ARGS=...]
# KEEP=1 keeps the temporary folder (removed otherwise); DOCKER=1 lets the jobs use this
# machine's Docker engine (they find none otherwise).
WORKFLOW ?= ci.yml
EVENT ?= push
EVENT_JSON ?=
ACT_ARGS ?=
KEEP ?=
DOCKER ?=

.PHONY: act
act: install ## Run a workflow here: WORKFLOW=pr.yml EVENT=pull_request [KEEP=1]
	python -m mlproject.ops.act "$(WORKFLOW)" "$(EVENT)" $(if $(EVENT_JSON),--event-json "$(EVENT_JSON)") $(if $(filter 1,$(KEEP)),--keep) $(if $(filter 1,$(DOCKER)),--docker) $(ACT_ARGS)

# This branch as a PR into main; cml is recorded, nothing is posted.
.PHONY: pr-local
pr-local: ## Run the PR workflow (pr.yml) here with act (no root needed)
	$(MAKE) act WORKFLOW=pr.yml EVENT=pull_request

.PHONY: doctor
doctor: ## Check the set-up here and the CI settings, one line each
	PYTHONPATH=src $(SYS_PYTHON) -m mlproject.ops.doctor

##@ Serving

MODEL ?= models/model.onnx
CARD ?= models/model_card.json
HOST ?= 127.0.0.1
PORT ?= 8000
IMAGE ?= mlproject-serve:latest

# Open Inference Protocol + /predict; HOST, PORT, MODEL, CARD.
.PHONY: serve
serve: install ## Serve the ONNX model on HOST:PORT (127.0.0.1:8000)
	python -m mlproject.serve --model $(MODEL) --card $(CARD) --host $(HOST) --port $(PORT)

# Batch scoring with onnxruntime and the card only (no PyTorch): a folder of images or one image,
# or a CSV/Parquet table; one row per item (id, class, probability). MODEL, CARD as for serve.
OUTPUT ?= reports/predictions.csv
.PHONY: predict
predict: install ## Batch scoring: INPUT=<file or folder> OUTPUT=<csv>
	@test -n "$(INPUT)" || { echo "error: give INPUT=<file or folder> (and OUTPUT=<csv>)" >&2; exit 2; }
	python -m mlproject.serve.predict --input "$(INPUT)" --output "$(OUTPUT)" --model $(MODEL) --card $(CARD)

# Without a Docker engine it prints the command to run where one is.
.PHONY: docker-build
docker-build: ## Build the serving image (IMAGE)
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  echo "docker build -t $(IMAGE) ."; docker build -t $(IMAGE) .; \
	else \
	  echo "No Docker engine here. Build the image where one runs:"; \
	  echo "  docker build -t $(IMAGE) ."; \
	fi

STAGE_K8S ?= staging

.PHONY: k8s-render
k8s-render: install ## Print a stage's Kubernetes manifests: STAGE_K8S=prod
	python -m mlproject.ops.deploy render $(STAGE_K8S)

##@ Monitoring and retraining

# monitor: LOGS=<folder with predictions.jsonl> or DATA=<image folder>; the report goes to MONITOR_OUT.
LOGS ?=
DATA ?=
# ACTUALS=<csv id,actual>: ground truth for logged predictions (with LOGS): live quality.
ACTUALS ?=
MONITOR_OUT ?= reports/monitor
MONITOR_SOURCE = $(if $(LOGS),--logs "$(LOGS)",$(if $(DATA),--data "$(DATA)"))

# Exit 0: no drift, 1: drift, 2: bad input. The report goes to MONITOR_OUT.
.PHONY: monitor
monitor: install ## Drift vs the profile: LOGS=<dir> | DATA=<dir> [ACTUALS=<csv>]
	python -m mlproject.monitor.drift $(MONITOR_SOURCE) $(if $(ACTUALS),--actuals "$(ACTUALS)") --out "$(MONITOR_OUT)"

# Starting the workflow needs gh and GH_TOKEN.
.PHONY: monitor-retrain
monitor-retrain: install ## Like monitor; on drift also start the retraining workflow
	python -m mlproject.monitor.drift $(MONITOR_SOURCE) --out "$(MONITOR_OUT)" --trigger-retrain

.PHONY: alerts-reference
alerts-reference: install ## Rewrite the alert rules' reference shares (make repro does it)
	python -m mlproject.ops.deploy reference-rules

# As scheduled; cml and gh are recorded, nothing is posted.
.PHONY: retrain-local
retrain-local: ## Run the retraining workflow (retrain.yml) here with act
	$(MAKE) act WORKFLOW=retrain.yml EVENT=schedule

##@ Model registry

# registry: VERSION=v1.2.0 or BUMP=patch|minor|major; STAGE=prod; REV=<version or git revision>;
# REPO=<git URL or path> to fetch from; MODEL_OUT=<folder>; PUSH=1 also pushes tags and the model.
VERSION ?=
BUMP ?= patch
STAGE ?=
REV ?=
REPO ?= .
MODEL_OUT ?= dist/model
PUSH ?=

.PHONY: register
register: install ## Register the model (name@vX.Y.Z): [VERSION=|BUMP=] [PUSH=1]
	python -m mlproject.ops.registry register $(if $(VERSION),--version "$(VERSION)") --bump "$(BUMP)" $(if $(PUSH),--push)

.PHONY: promote
promote: install ## Assign a stage (name#stage#N): STAGE=prod [VERSION=] [PUSH=1]
	python -m mlproject.ops.registry promote --stage "$(STAGE)" $(if $(VERSION),--version "$(VERSION)") $(if $(PUSH),--push)

# model.onnx, model_card.json, reference_profile.json -> MODEL_OUT.
.PHONY: fetch-model
fetch-model: install ## Download a registered model: STAGE=prod | REV=v1.2.0
	python -m mlproject.ops.registry fetch $(if $(STAGE),--stage "$(STAGE)",--rev "$(REV)") --repo "$(REPO)" --out "$(MODEL_OUT)"

.PHONY: registry
registry: install ## Show the model versions and their stages (gto show)
	python -m mlproject.ops.registry show

# MLFLOW_TRACKING_URI or tracking.mlflow in conf/config.yaml.
.PHONY: track
track: install ## Log the pipeline's last results to MLflow
	python -m mlproject.pipeline.tracking log

##@ Template updates (copier; docs/template.md)

# A project made with `copier copy` records the template version and its answers in
# .copier-answers.yml. REF: a template tag (default: its newest); DRY=1 updates a throwaway clone
# and lists what would change. Conflicts are marked inline (<<<<<<<) and listed. OPEN_PR=1
# (template-update.yml): then open one pull request with the change (needs TEMPLATE_UPDATE_TOKEN).
.PHONY: template-update template-adopt
# Without .copier-answers.yml (the template repository itself) it says so and installs nothing.
template-update: $(if $(wildcard .copier-answers.yml),install) ## copier update to the template's newest tag (REF=<tag>; DRY=1)
ifeq ($(wildcard .copier-answers.yml),)
	@echo "no .copier-answers.yml: this is the template repository itself, or a project that has not adopted it (make template-adopt REF=<tag> TEMPLATE=<url>); nothing to update."
else
	python -m mlproject.ops.template $(if $(filter 1,$(OPEN_PR)),pr,update) \
	  $(if $(REF),--ref=$(REF)) $(if $(filter 1,$(DRY)),--dry-run)
endif

# A fork or "Use this template" copy without .copier-answers.yml: record the version it came
# from (and commit it), then `make template-update` brings what came later.
template-adopt: install ## A fork starts receiving updates (REF=<tag>, TEMPLATE=<url>)
	python -m mlproject.ops.template adopt --ref="$(REF)" --template="$(TEMPLATE)"

##@ Quality: tests, lint, docs, benchmarks

# TEST_JOBS: pytest-xdist workers (auto: one per CPU, at most 4); TEST_JOBS=0 runs the tests one
# after another in one process. A test module runs on one worker (--dist loadfile), so its
# module-scoped fixtures are made once (tests/conftest.py); PYTEST_ARGS adds -k, -x, --durations=20.
TEST_JOBS ?= auto
XDIST = $(if $(filter 0,$(TEST_JOBS)),-n 0,-n $(TEST_JOBS) --maxprocesses 4 --dist loadfile)

.PHONY: test
test: install ## Run the whole test suite, in parallel (TEST_JOBS=0: serially)
	python -m pytest $(XDIST) $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: install ## Run the tests that take seconds (the server in-process)
	python -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

.PHONY: lint
lint: install lint-workflows lint-k8s lint-alerts ## Lint code, config, workflows, manifests, alert rules
	ruff check src tests benchmarks
	ruff format --check src tests benchmarks || { echo "run: ruff format src tests benchmarks"; exit 1; }
	python -m mlproject.pipeline.config --check

# --strict: a broken link, a missing anchor or a page left out of nav fails the build.
DOCS_PORT ?= 8001
export NO_MKDOCS_2_WARNING := 1

.PHONY: docs
docs: install ## Build the docs site into site/ (strict: broken links fail)
	mkdocs build --strict --site-dir site

.PHONY: docs-serve
docs-serve: install ## Serve the docs with live reload (DOCS_PORT, default 8001)
	mkdocs serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

# Each prints its figures beside their targets; docs/performance.md holds the current tables.
# COMPARE=<another machine's JSON> lists the ops whose bits differ (exit 1 when any do);
# OUT=<file> also keeps this machine's (benchmarks/numerics/ holds the machines compared so far).
COMPARE ?=
OUT ?=
.PHONY: numerics-probe
numerics-probe: install ## Hash each op the model uses: COMPARE=<JSON> OUT=<file>
	python -m mlproject.ops.numerics $(if $(COMPARE),--compare "$(COMPARE)") $(if $(OUT),--out "$(OUT)")

.PHONY: bench
bench: data ## Benchmark the pipeline: training loop, repro, ONNX vs PyTorch
	python benchmarks/pipeline.py

.PHONY: bench-report
bench-report: data ## Benchmark the PR report and the PR workflow's steps
	python benchmarks/report.py

.PHONY: bench-serve
bench-serve: install ## Benchmark serving (wrk): /infer vs a hand-written server
	python benchmarks/serve.py $(ARGS)

.PHONY: bench-table
bench-table: install ## Benchmark tables: prepare, an epoch, streaming memory
	python benchmarks/table.py $(ARGS)

.PHONY: bench-monitor
bench-monitor: data ## Benchmark the drift check over 10,000 records (target <= 5 s)
	dvc repro --quiet profile  # the model, the reference profile and the prepared images it reads
	python benchmarks/monitor.py

.PHONY: bench-sweep
bench-sweep: data ## Benchmark a sweep (JOBS=2 vs serial) and HPO's cost per trial
	python benchmarks/scale_sweep.py $(ARGS)

.PHONY: bench-scale
bench-scale: data ## Benchmark scale-out: streamed vs in-memory data, sweep and HPO
	python benchmarks/scale_data.py $(ARGS)
	python benchmarks/scale_sweep.py

.PHONY: bench-remote
bench-remote: install ## Benchmark an S3 round trip on loopback: push, pull, repro
	python benchmarks/remote.py $(ARGS)

##@ CI: the lint and test jobs (ci.yml); make lint runs the lint-* checks

.PHONY: ci-system-packages ci-test
ci-system-packages: ## System packages lint and tests need (promtool), as .ci/run
	bash .ci/run --setup-only

# The Lint job of the same run has run `make lint`: the test job does not run it again.
ci-test: ## The test job: .ci/run --no-lint (lint ran in the Lint job)
	bash .ci/run --no-lint

.PHONY: lint-workflows
lint-workflows: install ## Validate .github/: workflow schema, zizmor, actionlint
	check-jsonschema --builtin-schema vendor.github-workflows $(WORKFLOWS)
	check-jsonschema --builtin-schema vendor.github-actions .github/actions/*/action.yml
	check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml
	zizmor --offline --config .github/zizmor.yml --min-severity medium .github/workflows .github/actions
	actionlint -no-color $(WORKFLOWS)

.PHONY: lint-k8s
lint-k8s: install ## Validate deploy/k8s (base, overlays) and deploy/kserve
	python -m mlproject.ops.deploy validate

.PHONY: lint-alerts
lint-alerts: install ## Check the alert rules (promtool) and the reference shares
	python -m mlproject.ops.deploy reference-rules --check
	promtool check rules deploy/prometheus/rules.yml deploy/prometheus/reference.rules.yml
	promtool test rules deploy/prometheus/rules.test.yml

.PHONY: lint-docker
lint-docker: install ## Lint the Dockerfile (hadolint)
	hadolint Dockerfile

##@ CI: the pull-request loop (pr.yml, pr-loop.yml)

# Steps of .github/workflows/pr-loop.yml (the composite action has run `make install` already).
.PHONY: ci-pr-repro ci-pr-report ci-pr-summary ci-pr-gate ci-pr-comment ci-install-cml ci-test-gpu ci-gpu-route ci-gpu-runner
ci-pr-repro: ## Make data present, then dvc repro (--pull with a remote)
	python -m mlproject.pipeline.data
	python -m mlproject.report.ci repro

ci-pr-report: ## Build the report (the gate step fails the job)
	python -m mlproject.report build $(if $(BASE),--base $(BASE))

ci-pr-summary: ## Append the report to the job summary
	python -m mlproject.report.ci summary

ci-pr-gate: ## Fail when the quality gate in reports/pr/report.json failed
	python -m mlproject.report gate --from-report $(REPORT_DIR)/report.json

# Standard library only: the comment job has python3 and the report artifact, no environment.
ci-pr-comment: ## Post or update the PR's one report comment with CML
	PYTHONPATH=src $(PYTHON) -m mlproject.report.ci comment

ci-install-cml: ## Install the pinned CML CLI with npm (unless present)
	command -v cml >/dev/null || npm install --global --no-fund --no-audit @dvcorg/cml@$(CML_VERSION)

# On a GPU runner the gpu tests must run (tests/gpu_required.py): without CUDA, with a gpu test
# skipped, or with none collected (pytest's exit 5), the step fails.
ci-test-gpu: ## The gpu tests (GPU runner): no CUDA, a skip or none fails
	REQUIRE_GPU=1 PYTHONPATH=tests python -m pytest -p gpu_required -m gpu $(PYTEST_ARGS)

# Standard library only: pr.yml's refusal job has the checkout, no environment.
ci-gpu-route: ## Refuse self-hosted GPU in a public repo without SELF_HOSTED_ACK
	PYTHONPATH=src $(PYTHON) -m mlproject.ops.doctor gpu-route

ci-gpu-runner: ## Launch a cloud GPU runner with CML (--single, idle timeout)
	PYTHONPATH=src $(PYTHON) -m mlproject.report.ci launch-runner

##@ CI: retraining (retrain.yml)

# Steps of .github/workflows/retrain.yml (the composite action has run `make install` already).
.PHONY: retrain-data retrain-repro retrain-report retrain-pr
retrain-data: ## The newest data version (dvc update, else data.dvc's)
	python -m mlproject.ops.retrain data

retrain-repro: ## The whole pipeline on that data (dvc repro)
	dvc repro

retrain-report: ## The report against the production model (#prod, else main)
	python -m mlproject.ops.retrain report

retrain-pr: ## If the gate passed: dvc push, open or update the PR
	python -m mlproject.ops.retrain pr

##@ CI: release (release.yml)

# Steps of .github/workflows/release.yml; TAG is the registry tag (classifier@v1.2.0, classifier#prod#3).
TAG ?=
# RELEASE_IMAGE: the released image's name (default ghcr.io/<owner>/<repo>, lower-case).
RELEASE_IMAGE ?=
export TAG RELEASE_IMAGE
.PHONY: release-info release-assets release-publish release-image release-smoke release-push release-pull release-deploy ci-docker-engine
release-info: ## What TAG releases (version, stage, deploy?) -> $GITHUB_OUTPUT
	python -m mlproject.ops.release info

release-assets: ## Model, card, profile, notes, SHA256SUMS -> dist/release
	python -m mlproject.ops.release assets

release-publish: ## Create or update TAG's GitHub release with the assets
	python -m mlproject.ops.release publish

release-image: ## docker build the serving image with the released model
	python -m mlproject.ops.release image

release-smoke: ## Run the image: health, one OIP inference, one /predict
	python -m mlproject.ops.release smoke

release-push: ## Push the image to the GitHub container registry
	python -m mlproject.ops.release push

release-pull: ## docker pull the image of TAG's version (the deploy job)
	python -m mlproject.ops.release pull

release-deploy: ## On promotion to prod: move :prod (and DEPLOY_WEBHOOK_URL)
	python -m mlproject.ops.release deploy

# GITHUB_OUTPUT engine=true|false; the image steps run only with an engine.
ci-docker-engine: ## Is a Docker engine here? -> $GITHUB_OUTPUT engine=
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  echo "Docker engine: present"; echo "engine=true" >> "$${GITHUB_OUTPUT:-/dev/null}"; \
	else \
	  echo "::notice::No Docker engine on this runner: the image build, smoke test, push and deploy are skipped."; \
	  echo "engine=false" >> "$${GITHUB_OUTPUT:-/dev/null}"; \
	fi

comma := ,

##@ CI: the docs site (docs.yml)

.PHONY: ci-pages-off
ci-pages-off: ## Say how to turn GitHub Pages on (no PAGES_ENABLED)
	PYTHONPATH=src $(PYTHON) -m mlproject.ops.doctor pages-off

##@ CI: sweeps (sweep.yml)

# Steps of .github/workflows/sweep.yml. SHARD=i of SHARDS (matrix jobs); ARGS as for sweep.
SHARD ?= 0
SHARDS ?= 1
.PHONY: ci-sweep-plan ci-sweep-shard ci-sweep-collect ci-sweep-pr
# Standard library only: the plan job has python3 and the checkout, no environment.
ci-sweep-plan: ## The matrix: shards 0..SHARDS-1 -> $GITHUB_OUTPUT
	PYTHONPATH=src $(PYTHON) -m mlproject.experiments.ci plan --total $(SHARDS)

ci-sweep-shard: data ## Run shard SHARD of SHARDS; dvc exp push origin
	python -m mlproject.experiments.ci shard --index $(SHARD) --total $(SHARDS) --trials $(TRIALS) $(ARGS)

ci-sweep-collect: ## Fetch the shards' experiments, rank them, job summary
	python -m mlproject.experiments.ci collect $(ARGS)

ci-sweep-pr: ## dvc exp branch the best, open a PR (cml pr create)
	python -m mlproject.experiments.ci pr $(ARGS)
