# The two commands a newcomer runs: `make demo` and `make test`. Both set up .venv themselves;
# `make test` also the system packages the suite needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: demo test lint format setup system-packages bench clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# requirements.lock holds the exact versions CI tested; pyproject.toml the compatible ranges.
# The demo needs only the package; the suite adds the dev extras (pytest, ruff, PostgreSQL).
$(VENV)/.installed-run: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c requirements.lock -e .
	touch $@

$(VENV)/.installed: $(VENV)/.installed-run
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed-run
	$(BIN)/workbench demo

# The Debian packages the suite needs (SLURM + munge, pdflatex, chromium, pdftoppm): installed
# with apt-get when missing and root; otherwise one line with the command to run, and no test runs.
system-packages:
	@.ci/system-packages

# ruff first: a lint or format finding fails in a second, before the suite's minutes.
test: system-packages setup lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadgroup --durations 15

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Apply ruff's fixes and formatting (then review the diff).
format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup
	$(BIN)/workbench bench

# Refresh requirements.lock from pyproject.toml's ranges: a fresh venv, the newest allowed
# versions, then pip freeze. Run `make test` after it and commit both files together.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# The exact versions CI tested: 'make setup' installs with '-c requirements.lock'."; \
	  echo "# Refresh after changing pyproject.toml's dependencies: 'make lock' (a fresh venv, then pip freeze)."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^workbench'; } > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) outputs mlflow.db mlruns data/shapesworld
