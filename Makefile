# Thin targets: the work lives in the tickforge CLI and pytest.
VENV ?= .venv
PY := $(VENV)/bin/python
TF := $(VENV)/bin/tickforge
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit test-integration install system-deps stack-up stack-down bench clean

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
# Chromium (the live view's browser test). Installed only where missing.
system-deps:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql-15"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: install system-deps
	$(TF) demo

test: install system-deps
	$(PY) -m pytest tests/unit -q
	$(PY) -m pytest tests/integration -q

test-unit: install
	$(PY) -m pytest tests/unit -q

test-integration: install system-deps
	$(PY) -m pytest tests/integration -q

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
