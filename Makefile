# reca_nb: every command works from a fresh clone; the first one creates .venv (a few minutes).
# `make help` lists the targets.
#
#   make lab              JupyterLab on notebooks/ (the main job)
#   make test             everything: unit + CLI tests and every notebook via nbmake (the one test command)

SHELL := /bin/bash
.DEFAULT_GOAL := help

# interpreter that creates the venv (3.10+)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed FIRST and pinned: a plain `pip install torch` can pull a multi-GB CUDA build.
# Elsewhere, e.g.: make venv TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.reca_nb-installed
# architectures whose base checkpoints `make data` pretrains
ARCHS ?= showo-vq showo-clip janus harmon bagel openuni
# seconds per notebook cell (nbmake, nbconvert)
NB_TIMEOUT ?= 900
# extra pytest arguments (PYTEST_ARGS="-x -k prompts")
PYTEST_ARGS ?=
NOTEBOOKS = $(sort $(wildcard notebooks/[0-9]*.ipynb))
TOUR_DIR ?= $(or $(RECA_NB_HOME),$(HOME)/.cache/reca_nb)/tour
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

# nothing in this project may download weights or data sets from a hub
export HF_HUB_OFFLINE := 1

.PHONY: help venv lab tour test test-fast notebooks check-notebooks data bench reproduce clean-venv

help:
	@echo "make lab              JupyterLab on notebooks/ at http://127.0.0.1:8888 (creates .venv first)"
	@echo "make test             all tests: unit + CLI + every notebook (pytest --nbmake), offline"
	@echo "make test-fast        unit tests not marked slow, no notebooks"
	@echo "make tour             execute the notebook series headless into $(TOUR_DIR) (+ figures)"
	@echo "make notebooks        regenerate notebooks/*.ipynb from their py:percent sources, no outputs"
	@echo "make check-notebooks  fail if any .ipynb is out of sync with its .py or has outputs"
	@echo "make data             regenerate the shipped artefacts in data/ (tokenizers, CLIP, scorer, bases)"
	@echo "make bench            loop overhead ratio, per-arch RecA throughput + memory, per-notebook wall time -> results/bench.md"
	@echo "make reproduce        the paper's claims over seeds -> results/claims.md (REPRODUCE_ARGS=\"--jobs=12 --device=cuda\")"
	@echo "make venv             create .venv: $(TORCH) first, then pip install -e '.[dev]'"

# --- environment ----------------------------------------------------------------------------------------
venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(TORCH_PIP_ARGS) "$(TORCH)"
	$(PY) -m pip install -e ".[dev]"
	touch $@

clean-venv:
	rm -rf $(VENV)

# --- the main job ---------------------------------------------------------------------------------------
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser $(ALLOW_ROOT) --ServerApp.root_dir=notebooks

tour: $(STAMP)
	@test -n "$(NOTEBOOKS)" || { echo "no notebooks/NN_*.ipynb yet"; exit 1; }
	mkdir -p "$(TOUR_DIR)"
	# the kernels' inline backend must render the figures: MPLBACKEND=Agg would suppress them
	env -u MPLBACKEND $(VENV)/bin/jupyter nbconvert --to notebook --execute \
		--ExecutePreprocessor.timeout=$(NB_TIMEOUT) --output-dir "$(TOUR_DIR)" $(NOTEBOOKS)
	cd "$(TOUR_DIR)" && $(abspath $(VENV))/bin/jupyter nbconvert --to markdown $(notdir $(NOTEBOOKS))
	@echo "executed notebooks, markdown and figures (*_files/*.png) in $(TOUR_DIR)"

# --- tests ----------------------------------------------------------------------------------------------
# pytest exits 5 when it collects nothing; that can only mean "no tests and no notebooks yet", reported as
# such and not as a failure. With tests/ present it never happens.
test: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest tests $(NOTEBOOKS) --nbmake --nbmake-timeout=$(NB_TIMEOUT) \
		$(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ] && [ -z "$(NOTEBOOKS)" ]; then echo "no tests collected (no notebooks yet)"; rc=0; fi; \
	exit $$rc

test-fast: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

# --- notebooks: py:percent sources -> stripped .ipynb ---------------------------------------------------
notebooks: $(STAMP)
	$(PY) tools/sync_notebooks.py

check-notebooks: $(STAMP)
	$(PY) tools/sync_notebooks.py --check

# --- shipped artefacts and experiments ------------------------------------------------------------------
data: $(STAMP)
	$(PY) -m reca_nb.fit_tokenizers
	$(PY) -m reca_nb.fit_clip --baseline --threads=1
	$(PY) -m reca_nb.fit_scorer
	set -e; for arch in $(ARCHS); do $(PY) -m reca_nb.pretrain --arch=$$arch; done

bench: $(STAMP)
	$(PY) benchmarks/loop_overhead.py
	$(PY) benchmarks/arch_throughput.py --out=results/bench.md
	$(PY) benchmarks/series_time.py --out=results/bench.md --timeout=$(NB_TIMEOUT)

# the claims table: results/claims.md + claims.csv + figures; finished jobs in results/runs/ are skipped
REPRODUCE_ARGS ?=
reproduce: $(STAMP)
	$(PY) -m reca_nb.reproduce --preset=full $(REPRODUCE_ARGS)
