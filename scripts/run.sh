#!/usr/bin/env bash
# Set up, then run the main job: a short fuzz campaign from the shipped seeds
# (findings in findings/, resumable), then the replay of the seeds.
# Arguments go to `evdiff fuzz` (e.g. --time 8h --jobs 4).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
if [ "$#" -eq 0 ]; then set -- --time 60; fi
evdiff fuzz "$@"
evdiff replay corpus/seeds || true   # exit 1 means "divergences found": the expected result
