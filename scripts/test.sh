#!/usr/bin/env bash
# Set up, then run the whole test suite.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# tests/test_report.py renders the campaign report in headless Chromium; install
# it where apt-get works (as root), else that test skips and says why.
# EVDIFF_NO_CHROMIUM=1 skips the install.
if [ -z "${EVDIFF_NO_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
        && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "scripts/test.sh: installing chromium for the report's browser test" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq chromium || { apt-get update -qq && apt-get install -y -qq chromium; }; } \
        >/dev/null 2>&1 </dev/null || echo "scripts/test.sh: could not install chromium; that test will skip" >&2
fi
python -m pytest "$@"
