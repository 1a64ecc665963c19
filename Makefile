# Two commands for a fresh machine: `make demo` (the main job) and `make test`.
# Each creates .venv on first use and installs the project with what it needs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint typecheck bench bench-quick clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "Installing edgesplit with torch and its test tools into $(VENV) (about 1.5 to 4 minutes, 1.9 GB)..."
	$(BIN)/pip install --progress-bar on -c constraints.txt -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/edgesplit demo

# Two pytest-xdist workers: the suite's servers and subprocesses often wait (1.5x faster than one
# on this 2-core machine). tests/conftest.py names the groups that share one worker (Ray, the
# wall-clock tests) and hands the longest out first.
PARALLEL := -n 2 --dist loadgroup --no-loadscope-reorder

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PARALLEL)

# The quick tier: pure tests (marked fast), no server, no subprocess.
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -m fast -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/run_all.py

# Every benchmark, briefly: a smoke test so that none can rot (CI runs it after `make test`).
# Its figures are not the README's; those come from a full `make bench`.
bench-quick: $(BIN)/.installed
	$(BIN)/python benchmarks/run_all.py --quick --out benchmark-results-quick.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
