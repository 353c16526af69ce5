#!/usr/bin/env bash
# Runs the JavaScript suites — host-js unit tests and the Playwright end-to-end tests in headless
# Chromium — with node's test runner. Prints each test (spec reporter) and ends with the plain
# summary line "N passed, N failed". Pass files to run a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(tests/unit/*.test.mjs tests/e2e/*.test.mjs)
exec node --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=./tests/lib/summary-reporter.mjs --test-reporter-destination=stdout \
  "${files[@]}"
