# genedml: set-up, demo and tests. Everything runs in .venv; nothing is downloaded but registry packages.
#   make demo   create .venv, install pinned dependencies, run the pipeline on the built-in demo
#   make test   the same install, then lint (ruff, snakemake --lint) and the whole test suite
#   make test-fast    the unit tier only (tests/unit, about two and a half minutes on 2 cores)
#   make test-slurm   the pipeline through a real one-node SLURM (root; apt-get installs slurm-wlm, munge)
#   make lint   ruff check, ruff format --check, snakemake --lint
# GPU machines: PyPI's torch 2.13.0 wheel for Linux is a CUDA build, so the same pins give a GPU install.
# For another CUDA build, point pip at PyTorch's index, e.g.
#   make demo PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3.11
VENV ?= .venv
LOCK ?= envs/requirements.lock
PIP_EXTRA ?=
CORES ?= all
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?=

BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.genedml-installed
export PATH := $(BIN):$(PATH)

.PHONY: install demo test test-fast test-slurm lint dry-run help gpu-wheels gpu-bench

help:
	@sed -n '1,10p' Makefile
	@echo "#   make gpu-wheels GPU_PYTHON_VERSION=3.12   wheels for an offline GPU node (docs/benchmarks.md)"

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24" -c $(LOCK)
	$(BIN)/python -m pip install --quiet -c $(LOCK) $(PIP_EXTRA) -e '.[dev]'
	$(BIN)/python -c "import genedml.compat as c; c.import_timm(); import openslide, zarr, snakemake; print('genedml environment ready')"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)
	@echo
	@echo "Report: $(abspath results/report.md)"
	@test ! -f results/report/index.html || echo "HTML report: $(abspath results/report/index.html)"

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) tests/unit

# Separate from `make test` because it installs system packages and starts daemons (stopped at the end).
test-slurm: $(STAMP)
	GENEDML_TEST_SLURM=1 $(BIN)/python -m pytest -q -rs $(PYTEST_ARGS) tests/workflow/test_slurm.py

lint: $(STAMP)
	$(BIN)/ruff check genedml tests benchmarks
	$(BIN)/ruff format --check genedml tests benchmarks
	$(BIN)/snakemake --lint

dry-run: $(STAMP)
	$(BIN)/snakemake -n

# The GPU benchmark on a node without registry access (docs/benchmarks.md, "GPU benchmark"): download here
# the few wheels that the embed path and the Gene-DML head need beyond torch, timm, numpy, scipy, h5py and
# scikit-learn, for the node's Python, pinned by the lock; copy the checkout there and run benchmarks/gpu.sh.
GPU_PYTHON_VERSION ?= 3.12
GPU_WHEELS_DIR ?= gpu-wheels
GPU_BENCH_ARGS ?=
GPU_WHEELS := $(shell grep -v '^\#' benchmarks/gpu-wheels.txt)

gpu-wheels:
	mkdir -p $(GPU_WHEELS_DIR)/py$(GPU_PYTHON_VERSION)
	rm -f $(GPU_WHEELS_DIR)/py$(GPU_PYTHON_VERSION)/*.whl
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) \
		--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d $(GPU_WHEELS_DIR)/py$(GPU_PYTHON_VERSION) \
		$$(for p in $(GPU_WHEELS); do grep -i "^$$p==" $(LOCK) || echo "MISSING-PIN-$$p"; done)
	@du -sh $(GPU_WHEELS_DIR)/py$(GPU_PYTHON_VERSION)

gpu-bench:
	benchmarks/gpu.sh $(GPU_BENCH_ARGS)
