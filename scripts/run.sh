#!/usr/bin/env bash
# Set up, then run the main job on the shipped corpus.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
evdiff replay corpus/seeds "$@"
