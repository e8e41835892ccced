# The two commands: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo
DATA_DIR := $(DEMO)/data
WORKDIR := $(DEMO)/workdir
# The demo trains the original recipe at 96 px so it finishes in minutes on a CPU.
DEMO_FLAGS := --recipe=original --dataset=sample_paintings --image_size=96 --epochs=12 --cache
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the package metadata changes.
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/tfds build artist_tfds/sample_paintings --config=default --data_dir=$(DATA_DIR)
	$(BIN)/python train.py $(DEMO_FLAGS) --data_dir=$(DATA_DIR) --workdir=$(WORKDIR)
	$(BIN)/python -m tools.samples --dataset=sample_paintings --data_dir=$(DATA_DIR) \
	  --split=test --per_artist=1 --out=$(DEMO)/samples
	$(BIN)/python predict.py --model_dir=$(WORKDIR)/saved_model --top_k=3 $(DEMO)/samples

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

clean:
	rm -rf $(DEMO) .pytest_cache
