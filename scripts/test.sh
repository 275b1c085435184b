#!/usr/bin/env bash
# Set up everything from scratch (system packages, .venv, Kafka jars, PostgreSQL; ClickHouse and
# Chromium for the warehouse tests),
# start the local stack and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
bootstrap_tests=1  # bootstrap.sh also installs what only the tests use
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

say "starting the local stack (Kafka + PostgreSQL + S3Proxy on 127.0.0.1)"
started_here=0
dicomflow stack status --check >/dev/null 2>&1 || started_here=1
dicomflow stack up --s3
if [ "${CI:-}" = "true" ] || [ "$started_here" = 1 ] && [ "${DICOMFLOW_KEEP_STACK:-}" != "1" ]; then
    trap 'say "stopping the local stack"; dicomflow stack down >/dev/null || true' EXIT
fi

say "type-checking src/ and faults/ (mypy --strict)"
python -m mypy -p dicomflow -p dicomflow_faults

say "linting (ruff)"
python -m ruff check src tests benchmarks faults

say "running the test suite"
python -m pytest -p no:cacheprovider "$@"
