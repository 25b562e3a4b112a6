# recursionlab -- two commands do all set-up on a fresh machine:
#   make lab    creates .venv if needed, installs, registers a Jupyter kernel and opens JupyterLab at the repository
#               root (notebooks/, exercises/ and docs/ in its file browser) with lesson 00 open
#   make test   creates or updates the same environment and runs every test (unit tests + every notebook at smoke)
#   make book   builds the course website (lessons, exercises, docs, API reference) into _build/book/html
#
# PyTorch: on a machine without an NVIDIA GPU we install the lean CPU build (about 200 MB instead of several GB of
# CUDA libraries) from PyTorch's CPU index; with a GPU, the default CUDA build from PyPI. Override either, e.g.
#   make lab TORCH_SPEC='torch==2.5.1' TORCH_INDEX=https://download.pytorch.org/whl/cu124

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
JOBS ?= 2
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_GPU),yes)
TORCH_SPEC ?= torch>=2.2
TORCH_INDEX ?=
else
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
endif
STAMP := $(VENV)/.recursionlab-installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: lab test install notebooks exercises lint bench clean gpu-check book browser

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet --retries 1 "$(TORCH_SPEC)" \
		$(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

lab: $(STAMP)
	$(PY) -m ipykernel install --user --name recursionlab --display-name "Python (recursionlab)"
	$(PY) -m jupyter lab --ServerApp.root_dir=. notebooks/00_welcome.ipynb

test: $(STAMP) browser
	$(PY) -m ruff check recursionlab tests benchmarks book
	OMP_NUM_THREADS=1 RECURSIONLAB_PROFILE=smoke RECURSIONLAB_PROGRESS=0 $(PY) -m pytest -n $(JOBS) --dist loadscope \
		--nbval-lax --nbval-current-env -p no:cacheprovider tests notebooks solutions exercises

# The course website (Jupyter Book 1.x, offline, from the committed outputs; Sphinx warnings are errors).
book: $(STAMP)
	$(PY) book/build.py

# Debian's chromium for the browser tests (tests/test_site.py, tests/test_lab.py), installed only when missing and
# only where apt-get runs as root. Elsewhere those tests skip with a hint; in CI (CI set) a missing browser fails them.
browser:
	@test -x $(CHROMIUM) || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
		  >/dev/null; }

# Re-execute every lesson and solution in place at the laptop profile (what is committed), then regenerate exercises.
notebooks: $(STAMP)
	RECURSIONLAB_PROFILE=laptop $(PY) -m recursionlab.course.notebooks run notebooks/*.ipynb solutions/*.ipynb
	$(PY) -m recursionlab.course.exercises

exercises: $(STAMP)
	$(PY) -m recursionlab.course.exercises

lint: $(STAMP)
	$(PY) -m ruff check recursionlab tests benchmarks book

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs _build

# One prepared GPU acceptance run (benchmarks/gpu_check.py, < 10 minutes on one H100/H200): the gpu-marked tests,
# HRM/TRM throughput at the paper configurations (bf16 eager/compiled, fp32) and a timed TRM-MLP 9x9 Sudoku run;
# appends a dated section to benchmarks/RESULTS.md. Its CPU dry run (--dry-run) is part of `make test`.
gpu-check: $(STAMP)
	$(PY) -m benchmarks.gpu_check
