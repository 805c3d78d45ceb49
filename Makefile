# byte-lcm: `make demo` runs the main job on the default corpus; `make test` installs and runs the tests.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch 2.13.0; set TORCH=torch for whatever your platform's default is.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO_MINUTES ?= 4
DEMO_MAX_TIME := $(shell printf '00:00:%02d:00' $(DEMO_MINUTES))

.PHONY: install demo test test-slow lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

## The main job: fetch the default corpus, train the tiny entropy model for DEMO_MINUTES, show patches.
demo: install
	$(BIN)/blcm data fetch
	$(BIN)/blcm fit --config configs/entropy-tiny.yaml --trainer.max_time $(DEMO_MAX_TIME) \
		--trainer.val_check_interval 100 --trainer.limit_val_batches 10
	$(BIN)/blcm patch examples/sample.txt --plot runs/entropy-tiny/patches.png
	$(BIN)/blcm patch examples/sample.txt --mode space
	@echo "TensorBoard logs: runs/entropy-tiny (tensorboard --logdir runs)"
	@echo "exported entropy model: runs/entropy-tiny/export; figure: runs/entropy-tiny/patches.png"

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

test-slow: install
	$(BIN)/pytest -m slow

bench: install
	$(BIN)/python benchmarks/patching.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
