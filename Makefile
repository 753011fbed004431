# Thin targets: the work lives in the tickforge CLI and pytest.
VENV ?= .venv
PY := $(VENV)/bin/python
TF := $(VENV)/bin/tickforge
STAMP := $(VENV)/.installed

.PHONY: demo lint test test-unit test-integration install system-deps stack-up stack-down bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e '.[dev]'
	@# Bytecode ahead of time: where PYTHONDONTWRITEBYTECODE is set (CI images often do), every
	@# process would otherwise recompile dagster, polars and snowflake on start (15 s -> 7 s).
	$(PY) -m compileall -q tickforge >/dev/null
	touch $(STAMP)

install: $(STAMP)

# What a fresh Debian machine may lack: Java and Maven (Kafka), PostgreSQL server binaries,
# Chromium (the live view's browser test), Prometheus (`stack up --with-prometheus`, `tickforge
# up`, the dashboard test). Installed only where missing.
system-deps:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql-15"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v prometheus >/dev/null || [ -x /usr/bin/prometheus ] || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: install system-deps
	$(TF) demo

# Tests read the samples in data/samples. Those marked full_data read the full five-day files
# too: they run where TICKFORGE_SHARED_DATA is set or ../shared/data exists (CI), else they are
# deselected and a line says so (a clone with nothing beside it passes `make test`).
SHARED_DATA := $(or $(TICKFORGE_SHARED_DATA),$(wildcard $(abspath ../shared/data)))
PYTEST := $(if $(SHARED_DATA),TICKFORGE_SHARED_DATA=$(SHARED_DATA) )$(PY) -m pytest -q \
	$(if $(SHARED_DATA),,-m "not full_data")
FULL_DATA_ON := full_data tests run on the full shared files in $(SHARED_DATA)
FULL_DATA_OFF := full_data tests deselected: no ../shared/data beside the checkout and TICKFORGE_SHARED_DATA unset
FULL_DATA_NOTE := $(if $(SHARED_DATA),$(FULL_DATA_ON),$(FULL_DATA_OFF))

# Lint, format and types first: a style or type error fails in seconds, before the suites start.
lint: install
	$(VENV)/bin/ruff check tickforge tests bench
	$(VENV)/bin/ruff format --check tickforge tests bench
	$(VENV)/bin/mypy

test: install system-deps lint
	@echo "$(FULL_DATA_NOTE)"
	$(PYTEST) tests/unit
	$(PYTEST) tests/integration

test-unit: install
	@echo "$(FULL_DATA_NOTE)"
	$(PYTEST) tests/unit

test-integration: install system-deps
	@echo "$(FULL_DATA_NOTE)"
	$(PYTEST) tests/integration

stack-up: install
	$(TF) stack up

stack-down: install
	$(TF) stack down

# The benchmarks' peers (vectorbt) are kept out of the runtime install.
bench: install
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[dev,bench]'
	$(PY) bench/bench_bars.py

clean:
	-$(TF) stack down
	rm -rf $(VENV) .tickforge
