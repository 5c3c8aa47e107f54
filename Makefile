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
ARGS := --config $(CONFIG) \
	$(if $(COMPETITION),--competition $(COMPETITION)) \
	$(if $(DATA_DIR),--data-dir $(DATA_DIR)) \
	$(if $(WEIGHTS_DIR),--weights-dir $(WEIGHTS_DIR)) \
	$(if $(WEIGHTS),--weights $(WEIGHTS)) \
	$(if $(BACKBONES),--backbones $(BACKBONES)) \
	$(if $(WORKSPACE),--workspace $(WORKSPACE))
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup test data features ensembles submit upload leaderboard clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install the harness (reruns when pyproject.toml changes)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $@

test: setup ## install everything and run all tests
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

data: setup ## download and unpack the competition's files (kaggle client)
	$(HARNESS) download $(ARGS)

features: setup ## extract and cache backbone features
	$(HARNESS) features $(ARGS)

ensembles: setup ## cross-validate every ensemble, print the CV table
	$(HARNESS) ensembles $(ARGS)

submit: setup ## features -> ensembles -> validated submission CSVs (offline demo by default)
	$(HARNESS) submit $(ARGS) $(if $(ENSEMBLE),--ensemble $(ENSEMBLE))

upload: setup ## upload the best (or ENSEMBLE=name) CSV and verify it on Kaggle
	$(HARNESS) upload $(ARGS) $(if $(ENSEMBLE),--ensemble $(ENSEMBLE))

leaderboard: setup ## fetch your scores, compare with CV, draw the plot
	$(HARNESS) leaderboard $(ARGS)

clean: ## remove .venv and caches (keeps work/, where features are cached)
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
