#!/usr/bin/env bash
# Run the Python exporter tests (tools/tests) in a virtual environment.
#
#   tools/run-tests.sh VENV_DIR [REQUIREMENTS_FILE] [PYTEST_ARGS...]
#
# Creates VENV_DIR with $PYTHON (default python3) if it has no bin/python,
# installs REQUIREMENTS_FILE into it (default tools/requirements.txt, the pinned
# versions; tools/requirements-latest.txt for the newest releases), then runs
# `python -m pytest tools/tests -q` from the repository root. Set CML_BIN to a
# built cml binary to also run exported specs with `cml run --no-fhe`.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 VENV_DIR [REQUIREMENTS_FILE] [PYTEST_ARGS...]" >&2
    exit 2
fi
venv=$1
shift
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
req=${1:-$repo/tools/requirements.txt}
[ $# -gt 0 ] && shift
case $req in /*) ;; *) [ -f "$req" ] || req=$repo/$req ;; esac
[ -f "$req" ] || { echo "$0: no requirements file $req" >&2; exit 2; }

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"

cd "$repo"
exec "$venv/bin/python" -m pytest -p no:cacheprovider tools/tests -q "$@"
