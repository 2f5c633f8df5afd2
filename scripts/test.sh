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
if command -v npm >/dev/null 2>&1 && [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --silent --no-audit --no-fund) \
    || echo "Could not install playwright-core: the browser test will be skipped" >&2
fi
# In CI the browser test must run, not skip.
if [ "${CI:-}" = "true" ]; then
  export REQUIRE_BROWSER=1
fi

export PERSONA_DOTENV=0
exec .venv/bin/python -m pytest -ra "$@"
