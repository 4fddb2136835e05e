# Two entry points (see README): `make train` installs and runs the main job, `make test` installs and runs the tests.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; on a GPU machine use e.g. `make TORCH=torch train`.
TORCH ?= torch==2.13.0
OUTPUT_DIR ?= outputs/gru-attn-multi30k-de-en
BIN := $(VENV)/bin

.PHONY: install train test

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

train: install
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/train.py --output_dir $(OUTPUT_DIR)
	$(BIN)/python scripts/translate.py --model $(OUTPUT_DIR) < data/example.de

test: install
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q
