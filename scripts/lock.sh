#!/usr/bin/env bash
# Refresh uv.lock from pyproject.toml: the one command after a change to
# pyproject.toml's dependencies. Versions already locked stay as they are
# unless pyproject.toml now excludes them; to move everything to the newest
# allowed releases: scripts/lock.sh --upgrade (or --upgrade-package NAME).
# Commit uv.lock with the pyproject.toml change: CI refuses a lock that does
# not match pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/uv.sh
"$UV" lock "$@"
