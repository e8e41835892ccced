# The two commands: `make demo` and `make test`. Both create or reuse .venv and
# install the exact versions in constraints.txt (setup.cfg has the ranges).
#
# Python: the first of python3.11, python3.12, python3.13, python3 that runs and is
# 3.11-3.13 (setup.cfg's python_requires); `make test PYTHON=/path/to/python3.x`
# (or PYTHON in the environment) picks one. To switch an existing .venv to another
# Python, remove .venv first.
SUPPORTED := 3.11 3.12 3.13
IS_SUPPORTED = -c 'import sys; sys.exit(sys.version_info[:2] not in [(3, 11), (3, 12), (3, 13)])'
ifeq ($(origin PYTHON),undefined)
PYTHON := $(firstword $(foreach p,$(addprefix python,$(SUPPORTED)) python3,\
  $(shell $(p) $(IS_SUPPORTED) >/dev/null 2>&1 && echo $(p))))
endif
CONSTRAINTS := constraints.txt
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/pip install --quiet -c $(CONSTRAINTS)
DEMO := demo
DATA_DIR := $(DEMO)/data
WORKDIR := $(DEMO)/workdir
# The demo trains the original recipe at 96 px so it finishes in minutes on a CPU.
DEMO_FLAGS := --recipe=original --dataset=sample_paintings --image_size=96 --epochs=12 --cache
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test results install browser lock clean

$(BIN)/python:
	@if [ -z "$(PYTHON)" ]; then \
	  echo "No supported Python found: artist-id needs Python 3.11, 3.12 or 3.13 (tried python3.11," \
	    "python3.12, python3.13, python3). Install one, or name it: make $(or $(MAKECMDGOALS),demo) PYTHON=/path/to/python3.12" >&2; \
	  exit 1; fi
	@$(PYTHON) $(IS_SUPPORTED) 2>/dev/null || { echo "PYTHON=$(PYTHON) is not Python 3.11, 3.12 or 3.13" \
	  "($$($(PYTHON) --version 2>&1)); artist-id supports those three." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip setuptools wheel

# Reinstall only when the package metadata or the pins change.
# The app extra (serve.py) is part of both commands.
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PIP_INSTALL) -e '.[app]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[app,test]'
	@$(MAKE) --no-print-directory browser
	touch $@

# The web app's browser test needs Debian's chromium and chromedriver. Installed with
# apt where it can be (root, or sudo without a password); elsewhere the test skips and
# says how to install them.
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "make: no apt-get: install Chromium and its chromedriver for the browser test" >&2; exit 0; fi; \
	SUDO=; [ "$$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && SUDO="sudo -n"; } || { \
	  echo "make: not root: 'sudo apt-get install $(BROWSER_PACKAGES)' for the browser test" >&2; exit 0; }; \
	echo "Installing $(BROWSER_PACKAGES) (apt) for the browser test"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	  --no-install-recommends $(BROWSER_PACKAGES) >/dev/null \
	  || echo "make: apt-get could not install $(BROWSER_PACKAGES); the browser test will skip" >&2

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/tfds build artist_tfds/sample_paintings --config=default --data_dir=$(DATA_DIR)
	$(BIN)/artist-id train $(DEMO_FLAGS) --data_dir=$(DATA_DIR) --workdir=$(WORKDIR)
	$(BIN)/artist-id samples --dataset=sample_paintings --data_dir=$(DATA_DIR) \
	  --split=test --per_artist=1 --out=$(DEMO)/samples
	$(BIN)/artist-id predict --model_dir=$(WORKDIR)/saved_model --top_k=3 $(DEMO)/samples

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# Regenerates every results table in README.md and docs/ from the JSON in results/.
results: $(VENV)/.installed
	$(BIN)/python -m tools.results

# Re-resolve the pins: the newest versions within setup.cfg's ranges, in a fresh venv
# on $(PYTHON) (use 3.11, the floor). Keeps constraints.txt's comment header and
# rewrites the rest; lines with a python_version marker must be put back by hand.
# Then run `make test` on 3.11, 3.12 and 3.13 (docs/building.md).
LOCK_VENV := .venv-lock
lock:
	@[ -n "$(PYTHON)" ] || { echo "No supported Python found; name one: make lock PYTHON=..." >&2; exit 1; }
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip setuptools wheel
	$(LOCK_VENV)/bin/pip install --quiet '.[app,test]'
	sed '/^# --- pip freeze/q' $(CONSTRAINTS) > $(CONSTRAINTS).new
	$(LOCK_VENV)/bin/pip freeze --all --exclude artist-id > $(LOCK_VENV)/freeze.txt
	sed -n 's/^tensorflow[-_]cpu==/tensorflow==/p' $(LOCK_VENV)/freeze.txt >> $(CONSTRAINTS).new
	cat $(LOCK_VENV)/freeze.txt >> $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf $(LOCK_VENV) build
	git diff --stat -- $(CONSTRAINTS) || true

clean:
	rm -rf $(DEMO) .pytest_cache
