#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench` from the llama-cpp-python sdist on PyPI (pinned by sha256),
# for measuring our CPU engine against llama.cpp on the same machine in the same run
# (`make bench-peers`). Opt-in: about 13 minutes on 2 cores, once. The build lives outside git,
# in $ACCEL_CACHE/llama.cpp/<version>/; a second run finds it and does nothing.
#
# Prints the path of the llama-bench binary on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
URL=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$VERSION.tar.gz
CACHE=${ACCEL_CACHE:-$HOME/.cache/ipfs-accelerate}
ROOT=$CACHE/llama.cpp/$VERSION
BIN=$ROOT/build/bin/llama-bench

log() { printf '\033[1;34m[llama.cpp]\033[0m %s\n' "$*" >&2; }

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

if ! command -v cmake >/dev/null; then
  log "installing cmake"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends cmake >/dev/null
fi

mkdir -p "$ROOT"
tarball=$ROOT/llama_cpp_python-$VERSION.tar.gz
if ! echo "$SHA256  $tarball" | sha256sum -c --status 2>/dev/null; then
  log "downloading llama-cpp-python $VERSION sdist"
  curl -fsSL --retry 3 -o "$tarball.part" "$URL"
  echo "$SHA256  $tarball.part" | sha256sum -c --status || { log "sha256 mismatch for $URL"; exit 1; }
  mv "$tarball.part" "$tarball"
fi

src=$ROOT/src
if [ ! -f "$src/CMakeLists.txt" ]; then
  rm -rf "$src" && mkdir -p "$src"
  tar -xzf "$tarball" -C "$src" --strip-components=3 "llama_cpp_python-$VERSION/vendor/llama.cpp"
fi

log "building llama-bench (about 13 minutes on 2 cores)"
# GGML_NATIVE: the same instruction set our runtime detection picks on this machine.
cmake -S "$src" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$ROOT/build" --target llama-bench -j "${JOBS:-$(nproc)}" >&2
echo "$BIN"
