"""The local stack: a real Kafka (one node or a cluster) and a real PostgreSQL server on 127.0.0.1
(and, on request, ClickHouse and an S3 server, S3Proxy).

Used by the demo, the benchmarks and the integration tests; production runs
against existing clusters and never needs this package.

The names below are loaded on first use (PEP 562): every command reads the
stack's state file (:mod:`.state`) to find the brokers, and that must not
cost the import of the TLS and process machinery (about 0.2 s).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dicomflow.stack._clickhouse import ClickHouseServer
    from dicomflow.stack._cluster import KafkaCluster
    from dicomflow.stack._kafka import KafkaBroker
    from dicomflow.stack._kafka_security import KafkaSecurity
    from dicomflow.stack._layout import ClusterLayout
    from dicomflow.stack._postgres import PostgresServer
    from dicomflow.stack._proc import free_port, free_ports
    from dicomflow.stack._s3proxy import S3ProxyServer
    from dicomflow.stack._stack import LocalStack, ServiceStatus
    from dicomflow.stack._tls import LocalCA, ServerCert, TestCA
    from dicomflow.stack.state import StackState

#: Public name -> the module that defines it.
_WHERE = {
    "ClickHouseServer": "_clickhouse",
    "ClusterLayout": "_layout",
    "KafkaBroker": "_kafka",
    "KafkaCluster": "_cluster",
    "KafkaSecurity": "_kafka_security",
    "LocalCA": "_tls",
    "LocalStack": "_stack",
    "PostgresServer": "_postgres",
    "S3ProxyServer": "_s3proxy",
    "ServerCert": "_tls",
    "ServiceStatus": "_stack",
    "StackState": "state",
    "TestCA": "_tls",
    "free_port": "_proc",
    "free_ports": "_proc",
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'dicomflow.stack' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dicomflow.stack.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ClickHouseServer",
    "ClusterLayout",
    "KafkaBroker",
    "KafkaCluster",
    "KafkaSecurity",
    "LocalCA",
    "LocalStack",
    "PostgresServer",
    "S3ProxyServer",
    "ServerCert",
    "ServiceStatus",
    "StackState",
    "TestCA",
    "free_port",
    "free_ports",
]
