# Tollgate: one entry point. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
WASM := target/wasm32-wasip1/release/tollgate.wasm
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian's Rust 1.96 builds std for wasm itself (-Zbuild-std) where rustup cannot download the
# wasm32-wasip1 target (see README, "Development").
DEBIAN_PACKAGES := rustc-web cargo-web rust-web-src lld-22 wasi-libc
DEBIAN_CARGO := RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 /usr/bin/cargo
WASI_FLAGS := -D warnings -C linker=wasm-ld-22 -C link-self-contained=no -L native=/usr/lib/wasm32-wasi
HAVE_RUSTUP_WASI := $(shell rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 && echo yes)
HAVE_RUSTUP_WASM := $(shell rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown && echo yes)
WASM_BINDGEN_VERSION = $(shell awk '/^name = "wasm-bindgen"$$/ { getline; gsub(/version = |"/, ""); print }' Cargo.lock)

# `make token` arguments.
SUB ?= demo-user
SCOPE ?= orders:read
TTL ?= 3600

.PHONY: help deps build run token api-key test test-schema-suite lint test-unit test-wasm test-e2e validate clean debian-toolchain

help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  make %-12s %s\n", $$1, $$2 }'

deps: $(VENV)/.installed ## Install everything missing (idempotent): wasm toolchain, Envoy, test tools
	@[ "$(HAVE_RUSTUP_WASI)" = yes ] || $(MAKE) --no-print-directory debian-toolchain

debian-toolchain:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing" >&2; \
		$(SUDO) apt-get update -qq >&2 && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >&2; \
	fi

$(VENV)/.installed: tests/requirements.txt
	@echo "installing Envoy and the test tools into $(VENV)" >&2
	@$(PYTHON) -m venv $(VENV) >&2
	@$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt >&2
	@touch $@

build: deps ## Build the filter: target/wasm32-wasip1/release/tollgate.wasm
ifeq ($(HAVE_RUSTUP_WASI),yes)
	RUSTFLAGS="-D warnings" cargo build --release --lib --target wasm32-wasip1
else
	RUSTFLAGS="$(WASI_FLAGS)" $(DEBIAN_CARGO) build --release --lib --target wasm32-wasip1 -Zbuild-std=std,panic_abort
endif
	@echo "built $(WASM) ($$(( $$(stat -c %s $(WASM)) / 1024 )) KiB)"

run: build ## Start the demo: Envoy on 127.0.0.1:10000 (admin :9901) + echo upstream, in the foreground
	@mkdir -p target/demo
	@$(PY) envoy/render.py envoy/tollgate.yaml policies/demo.json target/demo/envoy.yaml
	@$(PY) envoy/demo/run.py target/demo/envoy.yaml

token: $(VENV)/.installed ## Print a JWT the demo accepts (SUB=, SCOPE=, TTL= seconds)
	@$(PY) envoy/demo/mint_token.py --sub "$(SUB)" --scope "$(SCOPE)" --ttl "$(TTL)"

ID ?= my-client
SCOPES ?=
DAYS ?= 90
api-key: ## Print a new API key and its policy line (ID=, SCOPES="a b", DAYS=)
	@$(PYTHON) envoy/tools/new_api_key.py --id "$(ID)" --scopes "$(SCOPES)" --days "$(DAYS)"

# The official JSON-Schema-Test-Suite, as shipped inside the python-jsonschema sdist (PyPI).
SUITE_VERSION := 4.23.0
SUITE_DIR := $(TOOLS)/jsonschema-$(SUITE_VERSION)/json/tests
$(SUITE_DIR): $(VENV)/.installed
	@mkdir -p $(TOOLS)
	$(VENV)/bin/pip download -q --disable-pip-version-check --no-binary :all: --no-deps jsonschema==$(SUITE_VERSION) -d $(TOOLS)
	tar xzf $(TOOLS)/jsonschema-$(SUITE_VERSION).tar.gz -C $(TOOLS)
	@touch $@

test-schema-suite: $(SUITE_DIR) ## The JSON-Schema-Test-Suite (2020-12, draft 7) through Tollgate's body checks
	TOLLGATE_SCHEMA_SUITE=$(abspath $(SUITE_DIR)) cargo test --test schema_suite -- --ignored --nocapture

test: lint test-unit test-schema-suite test-wasm test-e2e ## Run every test tier
	@echo "all test tiers passed"

lint: ## rustfmt and clippy (-D warnings) on the engine
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

test-unit: ## Native unit tests of the engine
	cargo test

$(TOOLS)/bin/wasm-bindgen-test-runner: Cargo.lock
	cargo install --quiet --root $(TOOLS) wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION)
	@touch $@

test-wasm: deps $(TOOLS)/bin/wasm-bindgen-test-runner ## The engine's unit tests compiled to wasm32, run in Node (wasm-bindgen-test)
	@command -v node >/dev/null || { echo "installing Node.js" >&2; $(SUDO) apt-get install -y -qq nodejs >&2; }
ifeq ($(HAVE_RUSTUP_WASM),yes)
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(abspath $(TOOLS))/bin/wasm-bindgen-test-runner \
		cargo test --lib --target wasm32-unknown-unknown
else
	@$(MAKE) --no-print-directory debian-toolchain
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(abspath $(TOOLS))/bin/wasm-bindgen-test-runner \
		RUSTFLAGS="-C linker=wasm-ld-22" $(DEBIAN_CARGO) test --lib --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort
endif

test-e2e: build ## The built module in a real Envoy with real upstreams
	$(PY) -m pytest tests/e2e -q

validate: build ## envoy --mode validate on every config in envoy/ (also part of test-e2e)
	$(PY) -m pytest tests/e2e/test_envoy_configs.py -q

clean: ## Remove build output (keeps .venv and .tools)
	cargo clean
