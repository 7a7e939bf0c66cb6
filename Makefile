# ktsweep: one command each to set up and run the default sweep, or to run the tests.
#   make run    # fresh machine -> .venv -> snakemake --cores 2 on config/config.yaml
#   make test   # fresh machine -> .venv -> ruff + mypy + workflow lint + GPU rehearsal +
#                 `pip install .` alone in a fresh venv (.ci/fresh-install) + pytest + strict docs
#                 (what CI runs, via .ci/run)
#   make docs   # the documentation site (docs/ -> site/), warnings as errors
PYTHON ?= python3
VENV   ?= .venv
CORES  ?= 2
BIN    := $(VENV)/bin

.PHONY: setup run test test-all bench bench-analysis-scale docs clean gpu-wheels gpu-rehearsal claim-table

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

# Default test run (CI): everything except tests marked slow or gpu, with the GPU check's
# rehearsal beside it (mostly wheel downloads and installs: it overlaps the tests' waits on
# Snakemake start-ups; its log is printed if it fails), then the docs build. Two pytest
# workers (pytest-xdist, a test file per worker): the end-to-end tests spend most of their time waiting on Snakemake and job start-up, so one
# process left a 2-core machine idle more than half the time. --no-loadscope-reorder keeps the
# order of tests/conftest.py (the minutes-long end-to-end files first, longest job first)
# instead of xdist's order by number of tests, which left the longest file for last.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/ruff check ktsweep tests benchmarks .ci
	$(BIN)/mypy
	BIN=$(BIN) bash .ci/lint-workflow
	mkdir -p gpu-check
	$(MAKE) --no-print-directory gpu-rehearsal > gpu-check/rehearsal.log 2>&1 & rehearsal=$$!; \
	PYTHON=$(PYTHON) bash .ci/fresh-install > gpu-check/fresh-install.log 2>&1 & fresh=$$!; \
	$(BIN)/python -m pytest -m "not slow and not gpu" -q -n $(TEST_WORKERS) --dist loadfile \
	  --no-loadscope-reorder; tests=$$?; \
	if wait $$rehearsal; then echo "GPU rehearsal passed (gpu-check/rehearsal.log)"; \
	else cat gpu-check/rehearsal.log; echo "GPU rehearsal FAILED (log above)"; exit 1; fi; \
	if wait $$fresh; then tail -n 1 gpu-check/fresh-install.log; \
	else cat gpu-check/fresh-install.log; echo "fresh install FAILED (log above)"; exit 1; fi; \
	exit $$tests
	$(MAKE) --no-print-directory docs

# The documentation site (mkdocs.yml): science pages, user guide, API reference from the
# docstrings. --strict turns every warning (a broken link, an unknown page) into an error;
# not with --quiet, which hides the warnings from the strict check as well.
docs: setup
	$(BIN)/mkdocs build --strict

# The project's claim table (docs/science/claim-table.md): every theory sweep of config/theory/
# (about 20 minutes on 2 cores; a sweep already complete is not recomputed, but its fits and
# claims are redone with the current analysis code), then one verdict per claim over all
# their claims.csv. Not part of CI.
THEORY := $(sort $(basename $(notdir $(wildcard config/theory/*.yaml))))
claim-table: setup
	for c in $(THEORY); do \
	  $(BIN)/snakemake --cores $(CORES) --configfile config/theory/$$c.yaml \
	    --forcerun fits claims || exit 1; done
	$(BIN)/ktsweep claim-table $(foreach c,$(THEORY),results/$(c)/claims.csv) \
	  --md docs/science/claim-table.md \
	  --provenance "Made by make claim-table on $$(date -u +%Y-%m-%d) at commit $$(git rev-parse --short HEAD 2>/dev/null || echo unknown)."

test-all: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_mc.py
	$(BIN)/python benchmarks/bench_exact.py
	$(BIN)/python benchmarks/bench_workflow.py
	$(BIN)/python benchmarks/bench_gpu.py

# Peak memory and wall time of fits, claims and figures on 10^5, 10^6 and 10^7-point cubes
# (about 20 minutes and 0.5 GB of disk in the system's temporary folder; TMP=... moves it).
bench-analysis-scale: setup
	$(BIN)/python benchmarks/bench_analysis_scale.py $(if $(TMP),--tmp $(TMP))

# The wheels the GPU machine lacks (it reaches no index), for CPython 3.12 and CI's 3.11 twin,
# into the git-ignored gpu-wheels/; carry it to the GPU machine and run .ci/gpu-check there.
gpu-wheels: setup
	$(BIN)/python .ci/gpu_wheels.py download gpu-wheels

# The GPU check without a GPU: a venv holding only what the GPU machine has, plus the wheels.
gpu-rehearsal: gpu-wheels
	PYTHON=$(PYTHON) bash .ci/gpu-rehearsal

clean:
	rm -rf results logs .snakemake site
