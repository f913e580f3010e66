# Sourced by .ci/run, scripts/demo.sh and scripts/lock.sh (from the repository
# root): puts the pinned uv (scripts/uv-requirements.txt) in .uv/ if it is not
# there yet, and sets $UV to it. uv then installs .venv from uv.lock.
#
# uv lives in a venv of its own because `uv sync` removes from .venv whatever
# the lock does not list, uv included.
uv_pinned=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' scripts/uv-requirements.txt)
if [ "$(.uv/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$uv_pinned" ]; then
    rm -rf .uv
    python3 -m venv .uv
    .uv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes \
        --only-binary=:all: -r scripts/uv-requirements.txt
fi
UV=$PWD/.uv/bin/uv
# The machine's python3 is the interpreter (never one uv would download), and
# uv's cache stays off the project tree.
export UV_PYTHON=python3 UV_PYTHON_DOWNLOADS=never
