#!/usr/bin/env bash
# Set up everything from scratch and run dicomflow end to end on bundled sample DICOM:
# local Kafka + PostgreSQL, topics, migrations, receiver and consumer, then a report.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
dicomflow demo "$@"
