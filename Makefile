# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.ai4land-installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test test-fast bench lint dag clean slurm-start slurm-stop demo-slurm regenerate

$(STAMP): pyproject.toml
	./scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml
	@echo
	@echo "Products:"
	@echo "  maps (COG):       results/maps/<scenario>/ai4land_<scenario>_<year>.tif"
	@echo "  Zarr store:       results/product/ai4land.zarr"
	@echo "  STAC catalog:     results/publish/catalog.json"
	@echo "  evaluation:       results/eval/metrics.json, results/eval/figures/"
	@echo "  HTML report:      snakemake --report report.zip"

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

bench: install
	$(BIN)/python -m benchmarks

LINT_PATHS := src tests benchmarks scripts

lint: install
	$(BIN)/snakemake --lint
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/python scripts/check_function_length.py $(LINT_PATHS)

dag: install
	$(BIN)/snakemake --dag --configfile config/demo.yaml | dot -Tsvg > dag.svg

# A local single-node Slurm (root; apt) and the demo through the Slurm profile.
slurm-start:
	bash scripts/slurm/start.sh

slurm-stop:
	bash scripts/slurm/stop.sh

demo-slurm: install slurm-start
	$(BIN)/snakemake --profile profiles/slurm --workflow-profile profiles/slurm-ci \
		--configfile config/demo.yaml tests/workflow/slurm-ci.yaml

# Regenerate a published product from scratch in REGEN_DIR and compare it with its
# manifest, file by file: make regenerate MANIFEST=path/to/SHA256SUMS [CONFIG=config/demo.yaml]
CONFIG ?= config/demo.yaml
REGEN_DIR ?= regenerated
regenerate: install
	@test -n "$(MANIFEST)" || { echo "usage: make regenerate MANIFEST=path/to/SHA256SUMS [CONFIG=...]"; exit 2; }
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --directory $(REGEN_DIR) --forceall
	$(BIN)/ai4land verify-manifest $(MANIFEST) --root $(REGEN_DIR)/results

clean:
	rm -rf results resources logs benchmarks/logs .snakemake
