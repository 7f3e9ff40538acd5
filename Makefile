# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned here (a local CPU wheel); the library itself only asks for torch>=2.3.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# the report's rendering test needs a headless Chromium: installed here when missing and possible
chromium:
	@bash .ci/chromium

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/disco run --out runs/demo --proposer evolve --candidates 12 --seeds 0 1 2 --task synthetic

bench: $(STAMP)
	$(BIN)/python benchmarks/validate_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
