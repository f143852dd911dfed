# reca_nb: every command works from a fresh clone; the first one creates .venv (a few minutes).
# `make help` lists the targets.
#
#   make lab              JupyterLab on notebooks/ (the main job)
#   make test             everything: unit + CLI tests and every notebook via nbmake (the one test command)

SHELL := /bin/bash
.DEFAULT_GOAL := help

# interpreter that creates the venv (3.11+: the tested pins need it)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed FIRST and pinned. On Linux x86_64 the PyPI wheel of torch 2.13.0 IS the CUDA build (it
# pulls several GB of nvidia-* wheels); for the CPU-only build, take PyTorch's CPU index:
#   make venv TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# the tested versions of everything else (pip -c); empty: the newest releases pyproject.toml allows
CONSTRAINTS ?= constraints/tested.txt
STAMP := $(VENV)/.reca_nb-installed
# Colab's versions (`make venv-colab`): its Python (3.13; the first one found, else $(PYTHON)) and torch, the
# PyPI wheel (a CUDA build that also runs on the CPU; PyTorch's CPU index is not reachable from CI)
COLAB_PYTHON ?= $(or $(shell python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null),$(firstword $(wildcard $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions/3.13*/bin/python3.13)),$(PYTHON))
COLAB_VARS := VENV=.venv-colab PYTHON=$(COLAB_PYTHON) TORCH=torch==2.11.0 TORCH_PIP_ARGS= \
	CONSTRAINTS=constraints/colab.txt
LATEST_VARS := VENV=.venv-latest CONSTRAINTS=
# architectures whose base checkpoints `make data` pretrains
ARCHS ?= showo-vq showo-clip janus harmon bagel openuni
# seconds per notebook cell (nbmake, nbconvert)
NB_TIMEOUT ?= 900
# extra pytest arguments (PYTEST_ARGS="-x -k prompts")
PYTEST_ARGS ?=
NOTEBOOKS = $(sort $(wildcard notebooks/[0-9]*.ipynb))
TOUR_DIR ?= $(or $(RECA_NB_HOME),$(HOME)/.cache/reca_nb)/tour
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
# `make lab` opens working copies of the notebooks outside the repository (tools/lab_workspace.py says why)
LAB_DIR ?= $(or $(RECA_NB_HOME),$(HOME)/.cache/reca_nb)/lab
# torch threads of the lab's kernels (and of every process started here): RECA_NB_THREADS=2 make lab
ifdef RECA_NB_THREADS
export OMP_NUM_THREADS := $(RECA_NB_THREADS)
export RECA_NB_THREADS
endif

# nothing in this project may download weights or data sets from a hub
export HF_HUB_OFFLINE := 1

.PHONY: help venv venv-colab venv-latest test-colab test-latest lab lab-reset test-browser tour test test-fast notebooks check-notebooks colab-links data bench bench-real bench-sweep reproduce clean-venv

help:
	@echo "make lab              JupyterLab at http://127.0.0.1:8888 on working copies in $(LAB_DIR) (creates .venv first)"
	@echo "make lab-reset        replace the working copies with the repository's notebooks"
	@echo "make test             all tests: unit + CLI + notebooks (nbmake, and their figures as in JupyterLab), offline"
	@echo "make test-browser     JupyterLab driven by headless Chromium: figures and the explorer (screenshots)"
	@echo "make test-fast        unit tests not marked slow, no notebooks"
	@echo "make tour             execute the notebook series headless into $(TOUR_DIR) (+ figures)"
	@echo "make notebooks        regenerate notebooks/*.ipynb from their py:percent sources, no outputs"
	@echo "make check-notebooks  fail if any .ipynb is out of sync with its .py or has outputs"
	@echo "make colab-links      write pyproject's [project.urls] Repository into every Colab badge and clone cell"
	@echo "make data             regenerate the shipped artefacts in data/ (tokenizers, CLIP, scorer, bases)"
	@echo "make bench            loop overhead ratio, per-arch RecA throughput + memory, per-notebook wall time -> results/bench.md"
	@echo "make bench-real       Janus-Pro-1B / OpenUni-B at real size (random weights): memory of a LoRA RecA step vs the estimate"
	@echo "make bench-sweep      what make reproduce will cost here: each stage recipe timed, the sweep projected -> results/bench.md"
	@echo "make reproduce        the paper's claims over seeds -> results/claims.md (REPRODUCE_ARGS=\"--jobs=12 --device=cuda\")"
	@echo "make venv             create .venv: $(TORCH) first, then pip install -e '.[dev]' at the tested versions"
	@echo "make venv-colab       create .venv-colab with Google Colab's versions (Python 3.13, torch 2.11, ...)"
	@echo "make test-colab       unit tests + notebook 07 in .venv-colab (pyproject's lower bounds hold)"
	@echo "make venv-latest      create .venv-latest with the newest releases; make test-latest runs make test there"

# --- environment ----------------------------------------------------------------------------------------
venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "== [1/3] virtual environment $(VENV)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "== [2/3] $(TORCH) (the largest download)"
	$(PY) -m pip install --progress-bar on $(TORCH_PIP_ARGS) "$(TORCH)"
	@echo "== [3/3] reca_nb and its packages (transformers, diffusers, jupyterlab, ...)"
	$(PY) -m pip install --progress-bar on $(if $(CONSTRAINTS),-c $(CONSTRAINTS),--upgrade --upgrade-strategy eager) \
		-e ".[dev]"
	touch $@
	@echo "== $(VENV) ready: $$($(PY) --version)"

venv-colab:
	$(MAKE) venv $(COLAB_VARS)

venv-latest:
	$(MAKE) venv $(LATEST_VARS)

clean-venv:
	rm -rf $(VENV)

# --- the main job ---------------------------------------------------------------------------------------
lab: $(STAMP)
	$(PY) tools/lab_workspace.py
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser $(ALLOW_ROOT) --ServerApp.root_dir="$(LAB_DIR)"

lab-reset: $(STAMP)
	$(PY) tools/lab_workspace.py --reset

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
	$(PY) -m ruff check .
	MPLBACKEND=Agg $(PY) -m pytest tests --ignore=tests/browser $(NOTEBOOKS) --nbmake --nbmake-timeout=$(NB_TIMEOUT) \
		$(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ] && [ -z "$(NOTEBOOKS)" ]; then echo "no tests collected (no notebooks yet)"; rc=0; fi; \
	exit $$rc

# Colab's versions: every unit test and the notebook that runs real architectures (07)
test-colab:
	$(MAKE) test $(COLAB_VARS) NOTEBOOKS="$(wildcard notebooks/07_*.ipynb)"

test-latest:
	$(MAKE) test $(LATEST_VARS)

test-fast: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest tests --ignore=tests/browser -m "not slow" $(PYTEST_ARGS)

# needs Debian's chromium (apt-get install chromium; .ci/run installs it) and the [browser] extra
test-browser: $(STAMP)
	$(PY) -m pip install -q -e ".[browser]"
	$(PY) -m pytest tests/browser -v $(PYTEST_ARGS)
	@echo "screenshots: $(abspath $(or $(RECA_NB_SHOTS),build/browser))"

# --- notebooks: py:percent sources -> stripped .ipynb ---------------------------------------------------
notebooks: $(STAMP)
	$(PY) tools/sync_notebooks.py

check-notebooks: $(STAMP)
	$(PY) tools/sync_notebooks.py --check

colab-links: $(STAMP)
	$(PY) tools/set_repo_url.py

# --- shipped artefacts and experiments ------------------------------------------------------------------
data: $(STAMP)
	$(PY) -m reca_nb.build.fit_tokenizers
	$(PY) -m reca_nb.build.fit_clip --baseline --threads=1
	$(PY) -m reca_nb.build.fit_scorer
	set -e; for arch in $(ARCHS); do $(PY) -m reca_nb.build.pretrain --arch=$$arch; done

bench: $(STAMP)
	$(PY) benchmarks/loop_overhead.py
	$(PY) benchmarks/arch_throughput.py --out=results/bench.md
	$(PY) benchmarks/series_time.py --out=results/bench.md --timeout=$(NB_TIMEOUT)

# a GPU: bf16 and fp16 at the recipe's batch; a CPU: float32 at batch 1 (a step takes minutes, 16 GB of RAM)
bench-real: $(STAMP)
	$(PY) benchmarks/real_memory.py --out=results/bench.md $(if $(shell $(PY) -c 'import torch; print(torch.cuda.is_available() or "")' 2>/dev/null),--device=cuda --warmup=1 --steps=3,--device=cpu --batch=1)

bench-sweep: $(STAMP)
	$(PY) benchmarks/sweep_cost.py --out=results/bench.md

# the claims table: results/claims.md + claims.csv + figures; finished jobs in results/runs/ are skipped
REPRODUCE_ARGS ?=
reproduce: $(STAMP)
	$(PY) -m reca_nb.reproduce --preset=full $(REPRODUCE_ARGS)
