# Thin targets: the work lives in the tickforge CLI and pytest.
VENV ?= .venv
PY := $(VENV)/bin/python
TF := $(VENV)/bin/tickforge
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit test-integration install stack-up stack-down bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(TF) demo

test: install
	$(PY) -m pytest tests/unit -q
	$(PY) -m pytest tests/integration -q

test-unit: install
	$(PY) -m pytest tests/unit -q

test-integration: install
	$(PY) -m pytest tests/integration -q

stack-up: install
	$(TF) stack up

stack-down: install
	$(TF) stack down

bench: install
	$(PY) bench/bench_bars.py

clean:
	-$(TF) stack down
	rm -rf $(VENV) .tickforge
