# Flowing Through Layers: `make book` builds and opens the book, `make test` runs the tests.
# Both create ./.venv on first use and install everything the project needs into it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# A CPU build of PyTorch, installed before anything else so that pip does not fetch CUDA packages.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed
PYTEST_MARKERS ?= not slow and not gpu

.PHONY: book test test-all test-gpu lint clean install html-path strip

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC) || $(PY) -m pip install -q "torch>=2.2"
	$(PY) -m pip install -q -r requirements.txt -e ".[dev,book]"
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W --keep-going
	@echo ""
	@echo "Book built: $(CURDIR)/_build/html/index.html"
	@$(PY) -c "import os, webbrowser; os.environ.get('CI') or webbrowser.open('file://$(CURDIR)/_build/html/index.html')" || true

test: $(STAMP)
	$(PY) -m ruff check flowlib tests
	$(PY) -m pytest -m "$(PYTEST_MARKERS)"

test-all: $(STAMP)
	$(PY) -m pytest -m "not gpu"

test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu

lint: $(STAMP)
	$(PY) -m ruff check flowlib tests
	$(PY) -m ruff format --check flowlib tests || true

strip: $(STAMP)
	$(PY) tests/strip_outputs.py chapters

clean:
	rm -rf _build .pytest_cache .hypothesis
