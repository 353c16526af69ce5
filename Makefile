# ipfs-accelerate-web — the two commands a newcomer runs:
#   make demo   set up, build, stage and serve the demo at http://127.0.0.1:$(PORT)/
#   make test   set up, then run every suite (native Rust, Rust in Chromium, Playwright)
SHELL := /bin/bash
PORT ?= 8080
export ACCEL_CACHE ?= $(HOME)/.cache/ipfs-accelerate

# wasm-bindgen-test drives Debian's Chromium through chromedriver, with the flags in
# tests/webdriver.json (software WebGPU included).
WASM_TEST_ENV := CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_WEBDRIVER_JSON=$(CURDIR)/tests/webdriver.json

.PHONY: setup web demo serve test test-native test-gpu xdg-runtime test-wasm test-browser bench bench-quick bench-peers clean

setup:
	@scripts/setup.sh

## Build the worker + service-worker wasm and stage the site into dist/.
web:
	@scripts/build-web.sh

demo: setup web serve

serve:
	node scripts/serve.mjs --root dist --port $(PORT)

test: setup
	@$(MAKE) --no-print-directory test-native test-wasm web test-browser

## Native Rust tests (engine, format, cache policy, protocol), built once with the wgpu backend
## (`worker/gpu`), so the GPU suites (gpu_kernels, gpu_llama) run here too on lavapipe — the
## Vulkan-on-CPU driver scripts/setup.sh installs (mesa-vulkan-drivers). ACCEL_REQUIRE_GPU=1
## turns "SKIPPED: no Vulkan adapter" into a failure, so a missing driver cannot pass.
## Cost of the GPU part (2 shared cores): ~7 min more for a fresh debug build (wgpu, naga, ash),
## ~45 s more test time (gpu_kernels ~5 s, gpu_llama ~25 s, the CLI's gpu test ~15 s).
test-native: xdg-runtime
	ACCEL_REQUIRE_GPU=1 cargo test --workspace --features worker/gpu

## Only the GPU suites: every WGSL kernel against its CPU op, SmolLM2 on the gpu backend
## against the CPU backend and the fixture.
test-gpu: xdg-runtime
	ACCEL_REQUIRE_GPU=1 cargo test -p worker --features gpu --test gpu_kernels --test gpu_llama

# Mesa's Vulkan loader complains on every device when XDG_RUNTIME_DIR is unset (CI, containers).
export XDG_RUNTIME_DIR ?= $(CURDIR)/target/xdg-runtime
xdg-runtime:
	@mkdir -p -m 700 $(XDG_RUNTIME_DIR)

## Rust tests inside headless Chromium (dedicated worker, IndexedDB, WebGPU adapter).
test-wasm:
	$(WASM_TEST_ENV) cargo test --target wasm32-unknown-unknown -p sw -p worker --features worker/webgpu --test browser --test browser_gpu

## host-js unit tests and the Playwright end-to-end suite; ends with "N passed, N failed".
test-browser:
	tests/run-browser-suite.sh

## Every engine against its peers in one run (native CPU, llama.cpp when built, our engine and
## wllama in headless Chromium): bench-results/bench-<time>.{json,md,svg}, ratios printed last.
bench: setup web
	@scripts/bench.sh

## The same in under 5 minutes (one repetition, no llama.cpp): for checking a change.
bench-quick: setup web
	@QUICK=1 scripts/bench.sh

## Opt-in: our native CPU engine vs llama.cpp (built once from the llama-cpp-python sdist,
## ~13 min on 2 cores, cached in $(ACCEL_CACHE)/llama.cpp) on the same GGUF, same run.
bench-peers: setup
	@scripts/bench-peers.sh

clean:
	rm -rf dist test-results
	cargo clean
