#!/usr/bin/env bash
# `make bench` / `make bench-quick`: every engine we have against its peers, on this machine, in
# one run. Writes bench-results/bench-<UTC time>.{json,md,svg} and prints the table, then the
# ratios that matter last.
#
#   native   accel bench, cpu backend, 1 and 2 threads, int16 (fast) and f32 (exact) paths,
#            SmolLM2 Q4_1 packed and MiniLM packed (sentences/s); peak RSS
#   llama.cpp llama-bench on the same GGUF, 1 and 2 threads — only when its opt-in build exists
#            (`make bench-peers` builds it once, ~13 min); skipped by bench-quick
#   browser  scripts/bench-browser.mjs in headless Chromium: our engine through the public host
#            API (cold load, warm load from IndexedDB, TTFT, prefill, decode, MiniLM sentences/s)
#            and the peer wllama on the same GGUF, 1 thread and 2 threads (cross-origin isolated)
#
# QUICK=1 (bench-quick): one repetition, no llama.cpp, the browser's quick mode; < 5 minutes.
# The GPU rows arrive with the WebGPU backend.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${ACCEL_CACHE:-$HOME/.cache/ipfs-accelerate}"
TARGET="${CARGO_TARGET_DIR:-target}"
QUICK=${QUICK:-0}
REPS=${REPS:-3}
[ "$QUICK" = 1 ] && REPS=1
log() { printf '\033[1;34m[bench]\033[0m %s\n' "$*" >&2; }

stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
accel="$TARGET/release/accel"
[ -x "$accel" ] || cargo build --release -p worker --bin accel >&2

for t in 1 2; do
  log "native accel-cpu, $t thread(s): SmolLM2 (int16 and f32 paths)"
  "$accel" bench --model dist/models/smollm2-135m --threads "$t" --reps "$REPS" --json > "$raw/native-smollm2-$t.json"
  log "native accel-cpu, $t thread(s): MiniLM"
  "$accel" bench --model dist/models/minilm-l6 --threads "$t" --reps "$REPS" --json > "$raw/native-minilm-$t.json"
done

llama_bench="$CACHE/llama.cpp/0.3.36/build/bin/llama-bench"
if [ "$QUICK" != 1 ] && [ -x "$llama_bench" ]; then
  gguf="$CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  for t in 1 2; do
    log "llama.cpp, $t thread(s)"
    "$llama_bench" -m "$gguf" -t "$t" -p 128 -n 64 -r "$REPS" -o json 2>/dev/null > "$raw/llama-$t.json"
  done
else
  log "llama.cpp: skipped ($([ "$QUICK" = 1 ] && echo 'bench-quick' || echo "no build at $llama_bench; make bench-peers builds it"))"
fi

log "browser: our engine and wllama in headless Chromium"
node scripts/bench-browser.mjs --out "$raw/browser.json" --reps "$REPS" $([ "$QUICK" = 1 ] && echo --quick)

mkdir -p bench-results
node scripts/bench-report.mjs "$raw" "bench-results/bench-$stamp"
