#!/usr/bin/env bash
# The fault-injection suite: SIGKILL the consumer, the receiver, Kafka and PostgreSQL
# under a C-STORE load, soak one consumer, fuzz it, fail brokers of a three-broker
# cluster over, SIGKILL PostgreSQL under `dicomflow web` serving a DICOMweb load
# (--web SECONDS); print the figures; exit non-zero
# if anything acknowledged was lost or duplicated, the web tier answered a 5xx
# other than 503, or any check failed.
#
# It starts its own Kafka (one broker, then a three-broker cluster) and PostgreSQL on free ports in a temporary
# folder (the Kafka jars are shared with .dicomflow/cache) and removes them at the end;
# the development stack of `dicomflow stack up` is never touched.
#
#   scripts/faults.sh                                   # full size: 20,000 instances, 100,000 soak events
#   scripts/faults.sh --instances 2000 --soak 10000     # a quicker run
#   scripts/faults.sh --help                            # every option (sizes, seed, kinds, rate, --json)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
export TCP_NODELAY=1
# The suite lives beside the tests, not in the installed package: put its folder on the path.
export PYTHONPATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/faults${PYTHONPATH:+:$PYTHONPATH}"
python -m dicomflow_faults "$@"
