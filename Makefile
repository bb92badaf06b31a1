# Tokens in Motion: `make book` builds and opens the book, `make test` runs the tests.
# Both create ./.venv on first use and install everything the project needs into it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# A CPU build of PyTorch, installed before anything else so that pip does not fetch CUDA packages.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed
PYTEST_MARKERS ?= not slow and not gpu

.PHONY: assignments book-student book test test-all test-gpu test-colab lint clean install html-path strip browser-deps bench \
	setup-cells dist

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC) || $(PY) -m pip install -q "torch>=2.2"
	$(PY) -m pip uninstall -q -y flowlib 2>/dev/null || true  # the distribution's name before 0.2.0's release
	$(PY) -m pip install -q -r requirements.txt -e ".[dev,book]"
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W --keep-going
	@echo ""
	@echo "Book built: $(CURDIR)/_build/html/index.html"
	@$(PY) -c "import os, webbrowser; os.environ.get('CI') or webbrowser.open('file://$(CURDIR)/_build/html/index.html')" || true

test: $(STAMP) browser-deps
	$(PY) -m ruff check flowlib tests benchmarks assignments tools
	$(PY) -m pytest -m "$(PYTEST_MARKERS)"

test-all: $(STAMP) browser-deps
	$(PY) -m pytest -m "not gpu"

# The Colab path: a fresh venv with only what a chapter's setup cell installs runs every chapter (slow).
test-colab: $(STAMP)
	$(PY) -m pytest -m colab

# Debian's Chromium for the browser tests (Playwright drives /usr/bin/chromium; no browser download).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "browser tests need Debian's chromium: sudo apt-get install chromium (they skip without it)"; \
	  fi; }

# Student and autograder editions of the Otter-Grader assignments, into _build/assignments (not committed).
assignments: $(STAMP)
	$(PY) assignments/build.py --out _build/assignments

# The book with every exercise solution hidden (sphinx-exercise's hide_solutions), into _build/student.
book-student: $(STAMP)
	$(PY) -c "import yaml; c = yaml.safe_load(open('_config.yml')); c['sphinx']['config']['hide_solutions'] = True; yaml.safe_dump(c, open('_config_student.yml', 'w'))"
	$(VENV)/bin/jupyter-book build . --config _config_student.yml --path-output _build/student; status=$$?; rm -f _config_student.yml; exit $$status
	@echo "Student edition: $(CURDIR)/_build/student/_build/html/index.html"

# Benchmarks (minutes; run on an otherwise idle machine), then the book's results page.
bench: $(STAMP)
	$(PY) benchmarks/bench_attention.py
	$(PY) benchmarks/bench_meanfield.py
	$(PY) benchmarks/report.py

# GPU tests in their own virtual environment with a CUDA build of torch (the CPU wheel of .venv has no
# CUDA). Fails, never skips: without an NVIDIA GPU it stops at once with a message; under
# FLOWLIB_REQUIRE_GPU=1 (tests/conftest.py) a gpu test that skips counts as a failure.
VENV_GPU ?= .venv-gpu
TORCH_GPU_SPEC ?= torch>=2.2
test-gpu:
	@command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 || { \
	  echo "make test-gpu: no NVIDIA GPU found (nvidia-smi missing or failing); the GPU tests need CUDA and cannot run here." >&2; exit 2; }
	test -x $(VENV_GPU)/bin/python || $(PYTHON) -m venv $(VENV_GPU)
	$(VENV_GPU)/bin/python -m pip install -q "$(TORCH_GPU_SPEC)"
	$(VENV_GPU)/bin/python -m pip install -q -r requirements.txt -e ".[dev]"
	$(VENV_GPU)/bin/python -c "import sys, torch; torch.cuda.is_available() or sys.exit('make test-gpu: torch ' + torch.__version__ + ' in $(VENV_GPU) has no CUDA; set TORCH_GPU_SPEC to a CUDA build')"
	FLOWLIB_REQUIRE_GPU=1 $(VENV_GPU)/bin/python -m pytest -m gpu

lint: $(STAMP)
	$(PY) -m ruff check flowlib tests benchmarks assignments tools
	$(PY) -m ruff format --check flowlib tests benchmarks assignments tools

# Write tools/setup_cell.py (the pinned `tokens-in-motion[notebooks]==<version>` install) into every chapter's
# first code cell and every assignment's install block. Run it after changing the template or the version.
setup-cells: $(STAMP)
	$(PY) tools/sync_setup_cells.py

# The wheel and the sdist of the distribution `tokens-in-motion` into dist/ (the release workflow does this on a tag).
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(PY) -m twine check --strict dist/*

strip: $(STAMP)
	$(PY) tests/strip_outputs.py chapters

clean:
	rm -rf _build .pytest_cache .hypothesis dist build
