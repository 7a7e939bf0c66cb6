# ktsweep: one command each to set up and run the default sweep, or to run the tests.
#   make run    # fresh machine -> .venv -> snakemake --cores 2 on config/config.yaml
#   make test   # fresh machine -> .venv -> ruff + workflow lint + GPU rehearsal + pytest + strict docs
#                 (what CI runs, via .ci/run)
#   make docs   # the documentation site (docs/ -> site/), warnings as errors
PYTHON ?= python3
VENV   ?= .venv
CORES  ?= 2
BIN    := $(VENV)/bin

.PHONY: setup run test test-all bench docs clean gpu-wheels gpu-rehearsal

# torch is installed first, pinned: 2.13.0 is a CPU build on these machines (an unpinned
# torch would pull a multi-GB CUDA build). Everything else is pinned in requirements.lock.
$(BIN)/ktsweep: pyproject.toml requirements.lock requirements-docs.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.lock -r requirements-docs.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(BIN)/ktsweep

setup: $(BIN)/ktsweep

run: setup
	$(BIN)/snakemake --cores $(CORES)

# Default test run (CI): the GPU check's rehearsal, then everything except tests marked slow
# or gpu, then the docs build. Two pytest workers (pytest-xdist, a test file per worker): the
# end-to-end tests spend most of their time waiting on Snakemake and job start-up, so one
# process left a 2-core machine idle more than half the time.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/ruff check ktsweep tests benchmarks .ci
	BIN=$(BIN) bash .ci/lint-workflow
	$(MAKE) gpu-rehearsal
	$(BIN)/python -m pytest -m "not slow and not gpu" -q -n $(TEST_WORKERS) --dist loadfile
	$(MAKE) --no-print-directory docs

# The documentation site (mkdocs.yml): science pages, user guide, API reference from the
# docstrings. --strict turns every warning (a broken link, an unknown page) into an error;
# not with --quiet, which hides the warnings from the strict check as well.
docs: setup
	$(BIN)/mkdocs build --strict

test-all: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_mc.py
	$(BIN)/python benchmarks/bench_exact.py
	$(BIN)/python benchmarks/bench_workflow.py
	$(BIN)/python benchmarks/bench_gpu.py

# The wheels the GPU machine lacks (it reaches no index), for CPython 3.12 and CI's 3.11 twin,
# into the git-ignored gpu-wheels/; carry it to the GPU machine and run .ci/gpu-check there.
gpu-wheels: setup
	$(BIN)/python .ci/gpu_wheels.py download gpu-wheels

# The GPU check without a GPU: a venv holding only what the GPU machine has, plus the wheels.
gpu-rehearsal: gpu-wheels
	PYTHON=$(PYTHON) bash .ci/gpu-rehearsal

clean:
	rm -rf results logs .snakemake site
