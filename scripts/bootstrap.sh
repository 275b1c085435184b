#!/usr/bin/env bash
# Install everything dicomflow needs on a fresh Debian machine; idempotent and quick
# when nothing is missing. Sourced by scripts/demo.sh and scripts/test.sh.
#
#   system packages: Java 17 + Maven (to fetch the Kafka broker's jars), PostgreSQL, dcmtk, npm (to fetch
#                    the OHIF viewer's built files);
#                    with bootstrap_tests=1 (a shell variable scripts/test.sh sets; not exported,
#                    since every DICOMFLOW_* variable is a setting) also what only the
#                    tests use: GDCM's gdcmscu (a third DICOM sender), Orthanc + its DICOMweb plugin, ClickHouse (the warehouse DDL runs against a real server) and
#                    Chromium (the HTML report is rendered headless); the demo needs neither
#   Python:          a virtualenv in .venv with dicomflow and its test dependencies
# The Kafka jars and the OHIF viewer (npm @ohif/app) are fetched by `dicomflow stack up` into .dicomflow/cache.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ -x /usr/bin/dcmdump ] && [ -x /usr/bin/storescu ] || missing+=(dcmtk)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${bootstrap_tests:-0}" = 1 ]; then
    [ -x /usr/bin/gdcmscu ] || missing+=(libgdcm-tools)  # a third DICOM implementation for the receiver tests
    [ -x /usr/sbin/clickhouse-server ] || [ -x /usr/bin/clickhouse-server ] || missing+=(clickhouse-server)
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    # Orthanc and its DICOMweb plugin: the DICOMweb tests compare QIDO-RS answers side by side
    [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
    [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
fi
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing system packages: ${missing[*]} (install them, or run this as root)" >&2
        exit 1
    fi
    say "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "dicomflow needs Python >= 3.11 (found: $("$PY" --version 2>&1))" >&2
    exit 1
fi

stamp=".venv/.dicomflow-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "creating the Python environment in .venv"
    [ -x .venv/bin/python ] || "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
