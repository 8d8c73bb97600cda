# The two commands of the README:
#   make serve   install everything, run the API (with no model yet: serve a quick model
#                within minutes, build the starter in the background and switch to it)
#   make test    install everything, run the tests
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export CARELENS_HOME ?= $(CURDIR)/var
export CARELENS_DATA ?= $(abspath ../shared/data)
MODEL_DIR := $(or $(CARELENS_MODEL_DIR),$(CARELENS_HOME)/models/starter)

.PHONY: install serve test lint model clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: 2.13.0 is the local CPU build (any other spec pulls CUDA)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# `make model` builds the starter model in the foreground (25 to 35 minutes on 2 idle cores,
# docs/training.md, "Build")
$(MODEL_DIR)/model_config.json: | $(STAMP)
	@test -d "$(CARELENS_DATA)" || { echo "No model at $(MODEL_DIR) and no public data at $(CARELENS_DATA) to build one: set CARELENS_DATA, or CARELENS_MODEL_DIR to a model directory."; exit 2; }
	@echo "No model at $(MODEL_DIR): building the starter model from $(CARELENS_DATA)."
	$(BIN)/carelens starter --out $(MODEL_DIR)

model: $(MODEL_DIR)/model_config.json

serve: $(STAMP)
	@test -f "$(MODEL_DIR)/model_config.json" || test -d "$(CARELENS_DATA)" || { echo "No model at $(MODEL_DIR) and no public data at $(CARELENS_DATA) to build one: set CARELENS_DATA, or CARELENS_MODEL_DIR to a model directory."; exit 2; }
	$(BIN)/carelens serve --model $(MODEL_DIR) --build-missing

test: $(STAMP)
	bash .ci/system-packages
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var
