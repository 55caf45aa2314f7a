# One-liners for the common chores; each sets up .venv first if it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test check bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/hookdock serve

test: $(VENV)/.installed
	$(VENV)/bin/pytest

check: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) bench/ingest.py
	$(PY) bench/post_to_file.py
