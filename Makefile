# Two entry points: `make demo` (set up, then run the bundled demo) and `make test` (set up, then
# lint and run the whole test suite). Both create ./.venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test evidence lint setup clean

demo: $(VENV)/.installed
	$(BIN)/attnmap demo

test: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

# The README's evaluation table, regenerated in full with its printed command and compared (±0.05).
evidence: $(VENV)/.installed
	ATTNMAP_EVIDENCE_FULL=1 $(BIN)/python -m pytest -q tests/test_readme.py -k evaluation_table

setup: $(VENV)/.installed

# torch and torchvision first, pinned to the builds this machine keeps on disk (DEVELOPERS.md).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[dev,dist,hf]"
	touch $@

clean:
	rm -rf $(VENV) attnmap-demo .pytest_cache .ruff_cache
