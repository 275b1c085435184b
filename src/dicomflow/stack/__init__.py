"""The local stack: a real Kafka broker and a real PostgreSQL server on 127.0.0.1.

Used by the demo, the benchmarks and the integration tests; production runs
against existing clusters and never needs this package.
"""

from dicomflow.stack._clickhouse import ClickHouseServer
from dicomflow.stack._kafka import KafkaBroker
from dicomflow.stack._postgres import PostgresServer
from dicomflow.stack._stack import LocalStack, ServiceStatus

__all__ = ["ClickHouseServer", "KafkaBroker", "LocalStack", "PostgresServer", "ServiceStatus"]
