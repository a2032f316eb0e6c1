#!/usr/bin/env bash
# Set up, then run the whole test suite.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -m pytest "$@"
