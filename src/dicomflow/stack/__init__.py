"""The local stack: a real Kafka (one node or a cluster) and a real PostgreSQL server on 127.0.0.1.

Used by the demo, the benchmarks and the integration tests; production runs
against existing clusters and never needs this package.
"""

from dicomflow.stack._clickhouse import ClickHouseServer
from dicomflow.stack._cluster import KafkaCluster
from dicomflow.stack._kafka import KafkaBroker
from dicomflow.stack._kafka_security import KafkaSecurity
from dicomflow.stack._layout import ClusterLayout
from dicomflow.stack._postgres import PostgresServer
from dicomflow.stack._proc import free_port, free_ports
from dicomflow.stack._stack import LocalStack, ServiceStatus
from dicomflow.stack._tls import LocalCA, ServerCert, TestCA

__all__ = [
    "ClickHouseServer",
    "ClusterLayout",
    "KafkaBroker",
    "KafkaCluster",
    "KafkaSecurity",
    "LocalCA",
    "LocalStack",
    "PostgresServer",
    "ServerCert",
    "ServiceStatus",
    "TestCA",
    "free_port",
    "free_ports",
]
