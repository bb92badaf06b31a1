# Tokens in Motion: `make book` builds and opens the book, `make test` runs the tests.
# Both create ./.venv on first use and install everything the project needs into it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# A CPU build of PyTorch, installed before anything else so that pip does not fetch CUDA packages: PyTorch's
# CPU wheel index is added to pip's indexes (its `+cpu` builds win over PyPI's CUDA ones for the same version).
# Changing TORCH_SPEC (or TORCH_INDEX) reinstalls torch in the existing .venv (see $(TORCH_STAMP)).
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP  := $(VENV)/.installed
TORCH_STAMP := $(VENV)/.torch-spec
PYTEST_MARKERS ?= not slow and not gpu
# The unit suite: flowlib, its doctests, notebook hygiene and packaging; no book build, browser, grading or Colab.
LIB_MARKERS ?= not slow and not gpu and not book and not browser and not assignments and not colab
RUFF_PATHS := flowlib tests benchmarks assignments tools experiments

.PHONY: assignments book-student book test test-lib test-all test-gpu test-colab test-floor lint clean install html-path \
	strip browser-deps bench setup-cells dist FORCE

# Rewritten only when TORCH_SPEC or TORCH_INDEX differ from what .venv was built with, so that the stamp rule below
# runs again (a plain `make test TORCH_SPEC=...` used to do nothing once .venv existed).
$(TORCH_STAMP): FORCE
	@mkdir -p $(VENV)
	@echo '$(TORCH_SPEC) $(TORCH_INDEX)' | cmp -s - $@ || echo '$(TORCH_SPEC) $(TORCH_INDEX)' > $@

$(STAMP): requirements.txt pyproject.toml $(TORCH_STAMP)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch alone from the CPU index (--no-deps: its dependencies come from PyPI with everything else below,
	# so an unreachable CPU index costs one look-up, not one per package)
	$(PY) -m pip install -q --no-deps --retries 1 "$(TORCH_SPEC)" --extra-index-url $(TORCH_INDEX)
	$(PY) -m pip uninstall -q -y flowlib 2>/dev/null || true  # the distribution's name before 0.2.0's release
	$(PY) -m pip install -q -r requirements.txt -e ".[dev,book,ot]"
	$(PY) -c "import torch; print('make: torch', torch.__version__, 'in $(VENV)')"
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W --keep-going
	@echo ""
	@echo "Book built: $(CURDIR)/_build/html/index.html"
	@$(PY) -c "import os, webbrowser; os.environ.get('CI') or webbrowser.open('file://$(CURDIR)/_build/html/index.html')" || true

test: $(STAMP) browser-deps
	$(PY) -m ruff check $(RUFF_PATHS)
	$(PY) -m ruff format --check $(RUFF_PATHS)
	$(PY) -m pytest -m "$(PYTEST_MARKERS)"

# The fast unit suite (a few minutes): what a change to flowlib needs before the book, browser and grading tests.
test-lib: $(STAMP)
	$(PY) -m ruff check $(RUFF_PATHS)
	$(PY) -m pytest -m "$(LIB_MARKERS)"

# The supported floor, torch 2.2 on Python 3.10, in its own venv (documented; not run in CI: it needs a Python 3.10
# interpreter, `PYTHON310=python3.10`, and downloads torch 2.2 from PyTorch's CPU index).
PYTHON310 ?= python3.10
VENV_FLOOR ?= .venv-floor
test-floor:
	@command -v $(PYTHON310) >/dev/null 2>&1 || { echo "make test-floor: $(PYTHON310) not found; set PYTHON310" >&2; exit 2; }
	test -x $(VENV_FLOOR)/bin/python || $(PYTHON310) -m venv $(VENV_FLOOR)
	$(VENV_FLOOR)/bin/python -m pip install -q "torch==2.2.*" "numpy<2" --index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple
	$(VENV_FLOOR)/bin/python -m pip install -q -e ".[dev,ot]"
	$(VENV_FLOOR)/bin/python -m pytest -m "$(LIB_MARKERS)"

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

# Student and autograder editions of the five Otter-Grader assignments, into _build/assignments (not committed).
assignments: $(STAMP)
	$(PY) assignments/build.py --out _build/assignments

# The book with no exercise solution anywhere, into _build/student: solutions hidden on the pages, no _sources,
# no download/launch/repository buttons (assignments/student_edition.py), then a search of every file for them.
book-student: $(STAMP)
	$(PY) assignments/student_edition.py config _config_student.yml
	$(VENV)/bin/jupyter-book build . --config _config_student.yml --path-output _build/student; status=$$?; rm -f _config_student.yml; exit $$status
	$(PY) assignments/student_edition.py scrub _build/student/_build/html
	$(PY) assignments/student_edition.py check _build/student/_build/html
	@echo "Student edition: $(CURDIR)/_build/student/_build/html/index.html"

# Benchmarks (minutes; run on an otherwise idle machine), then the book's results page.
bench: $(STAMP)
	$(PY) benchmarks/bench_attention.py
	$(PY) benchmarks/bench_meanfield.py
	$(PY) benchmarks/report.py

# Chapter 10's training study: one script per study, results with provenance in experiments/results/*.json
# (committed; the chapter loads them). About 50 min of CPU time, each study run as two parallel single-thread processes
# of about equal shares: measured 26 min 27 s on two cores; a GPU is used when present. See experiments/README.md.
.PHONY: experiments
experiments: $(STAMP)
	rm -rf experiments/results/cache
	OMP_NUM_THREADS=1 $(PY) experiments/depth_study.py --only 64 & part=$$!; \
	OMP_NUM_THREADS=1 $(PY) experiments/depth_study.py --only 2 4 8 16 32 && wait $$part
	OMP_NUM_THREADS=1 $(PY) experiments/depth_study.py
	OMP_NUM_THREADS=1 $(PY) experiments/long_training.py --only 16 & part=$$!; \
	OMP_NUM_THREADS=1 $(PY) experiments/long_training.py --only 4 8 && wait $$part
	OMP_NUM_THREADS=1 $(PY) experiments/long_training.py
	OMP_NUM_THREADS=1 $(PY) experiments/baselines.py
	OMP_NUM_THREADS=1 $(PY) experiments/geometry_study.py

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
	$(PY) -m ruff check $(RUFF_PATHS)
	$(PY) -m ruff format --check $(RUFF_PATHS)

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
