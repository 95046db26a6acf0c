#!/bin/bash
# The test suite: installs what it needs, starts the Docker engine, runs pytest.
# The S3 server (moto) and the registry are started by the tests themselves, on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/start-dockerd.sh
exec .venv/bin/python -m pytest "$@"
