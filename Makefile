# kaggle-image-harness: every target calls the `harness` CLI (or pip/pytest for setup/test).
# Variables (all optional): CONFIG, COMPETITION, DATA_DIR, WEIGHTS_DIR, WEIGHTS, BACKBONES,
# WORKSPACE, ENSEMBLE, PYTHON, e.g.
#   make submit COMPETITION=dogs-vs-cats-redux-kernels-edition DATA_DIR=../shared/data/dogs-vs-cats-mini \
#               WEIGHTS_DIR=../shared/weights BACKBONES=xception

PYTHON      ?= python3
VENV        ?= .venv
CONFIG      ?= harness.toml
COMPETITION ?=
DATA_DIR    ?=
WEIGHTS_DIR ?=
WEIGHTS     ?=
BACKBONES   ?=
WORKSPACE   ?=
ENSEMBLE    ?=
PYTEST_ARGS ?=

HARNESS := $(VENV)/bin/harness
# Each value is quoted for the shell, so paths with spaces or quotes stay one argument.
quote = '$(subst ','\'',$(1))'
ARGS := --config $(call quote,$(CONFIG)) \
	$(if $(COMPETITION),--competition $(call quote,$(COMPETITION))) \
	$(if $(DATA_DIR),--data-dir $(call quote,$(DATA_DIR))) \
	$(if $(WEIGHTS_DIR),--weights-dir $(call quote,$(WEIGHTS_DIR))) \
	$(if $(WEIGHTS),--weights $(call quote,$(WEIGHTS))) \
	$(if $(BACKBONES),--backbones $(call quote,$(BACKBONES))) \
	$(if $(WORKSPACE),--workspace $(call quote,$(WORKSPACE)))
ENSEMBLE_ARG = $(if $(ENSEMBLE),--ensemble $(call quote,$(ENSEMBLE)))
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup lock lint test init data features ensembles submit upload leaderboard wheelhouse clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install the pinned versions from requirements.lock

# The lock pins every package, with hashes, for Python 3.11-3.13: a fresh clone installs
# what the tests passed with, whatever upstream released since. `make lock` refreshes it.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --require-hashes -r requirements.lock
	$(VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

lock: setup ## re-resolve requirements.lock from pyproject.toml + requirements.in (then run make test)
	$(VENV)/bin/uv pip compile pyproject.toml requirements.in --extra test \
		--universal --python-version 3.11 --generate-hashes --upgrade -o requirements.lock
	@echo "requirements.lock refreshed: run 'make test' on a fresh clone before committing it"

lint: setup ## ruff over the whole project
	$(VENV)/bin/ruff check .

test: setup ## install everything and run all tests
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

init: setup ## propose a config for the competition in DATA_DIR (COMPETITION=its Kaggle slug)
	@test -n $(call quote,$(DATA_DIR)) || { echo "make init needs DATA_DIR=<the unpacked download>" >&2; exit 2; }
	$(HARNESS) init $(call quote,$(DATA_DIR)) $(if $(COMPETITION),--name $(call quote,$(COMPETITION)))

data: setup ## download and unpack the competition's files (kaggle client)
	$(HARNESS) download $(ARGS)

features: setup ## extract and cache backbone features
	$(HARNESS) features $(ARGS)

ensembles: setup ## cross-validate every ensemble, print the CV table
	$(HARNESS) ensembles $(ARGS)

submit: setup ## features -> ensembles -> validated submission CSVs (offline demo by default)
	$(HARNESS) submit $(ARGS) $(ENSEMBLE_ARG)

upload: setup ## upload the best (or ENSEMBLE=name) CSV and verify it on Kaggle
	$(HARNESS) upload $(ARGS) $(ENSEMBLE_ARG)

leaderboard: setup ## fetch your scores, compare with CV, draw the plot
	$(HARNESS) leaderboard $(ARGS)

wheelhouse: setup ## wheels to install the harness offline (a Kaggle dataset) in WHEELHOUSE (default wheelhouse/)
	$(HARNESS) wheelhouse $(call quote,$(or $(WHEELHOUSE),wheelhouse))

clean: ## remove .venv and caches (keeps work/, where features are cached)
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
