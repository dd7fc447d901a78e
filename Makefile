# Two quick-start commands: `make demo` (main job) and `make test` (test suite).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: demo test bench lint smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint,ray]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m harness run --method all --preset demo --seeds 0,1,2,3,4 --jobs auto
	$(PY) -m harness report --out reports/latest
	@echo "The shift suite (camera, hard-balanced, hard-clean, hard): $(PY) -m harness run --method all --suite shifts --seeds 0,1,2 --jobs auto"

test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile tests --ignore=tests/bench

bench: $(STAMP)
	$(PY) -m pytest -q tests/bench --benchmark-enable --benchmark-columns=mean,ops,rounds

smoke: $(STAMP)
	$(PY) -m harness run --method source_only --preset smoke --store runs/smoke.db

lint: $(STAMP)
	$(PY) -m ruff check harness methods tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks
