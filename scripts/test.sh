#!/usr/bin/env bash
# One command: set up (first time) and run the offline test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k config`.
set -euo pipefail
EXTRAS=test
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"

# The browser test needs Debian's chromium and playwright-core (never a downloaded browser).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser test ..." >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "Could not install chromium: the browser test will be skipped" >&2
fi
# Its varied test voices need Debian's espeak-ng and sox (tests/speech.py).
if { ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; } && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null 2>&1; then
  echo "Installing espeak-ng and sox for the browser test's voices ..." >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng sox >/dev/null; } \
    || echo "Could not install espeak-ng/sox: the browser test will be skipped" >&2
fi
# Test-only npm packages (tests/browser/package.json): installed again when the lock changes.
npm_want="$(sha256sum tests/browser/package-lock.json | cut -d' ' -f1)"
if command -v npm >/dev/null 2>&1 \
    && [ "$(cat tests/browser/node_modules/.installed 2>/dev/null)" != "$npm_want" ]; then
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --silent --no-audit --no-fund \
    && echo "$npm_want" > node_modules/.installed) \
    || echo "Could not install the test npm packages: the browser and client-contract tests will be skipped" >&2
fi
# Tavus's Python client (tavus-cli) drives the bot in tests/test_tavus_clients.py: its wheel only
# (its CLI's dependencies are not needed for the module the test imports).
TAVUS_CLI_WHEEL=".venv/test-packages/tavus_cli-0.11.0-py3-none-any.whl"
if [ ! -f "$TAVUS_CLI_WHEEL" ]; then
  .venv/bin/python -m pip download --quiet --no-deps tavus-cli==0.11.0 -d .venv/test-packages \
    || echo "Could not download tavus-cli: its client test will be skipped" >&2
fi
export TAVUS_CLI_WHEEL
# In CI the browser test must run, not skip.
if [ "${CI:-}" = "true" ]; then
  export REQUIRE_BROWSER=1
fi

export PERSONA_DOTENV=0
exec .venv/bin/python -m pytest -ra "$@"
