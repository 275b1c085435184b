"""``dicomflow demo``: the whole system end to end on bundled sample DICOM.

Until the pipeline exists this brings the stack up and round-trips one store
event through Kafka.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command."""

    @app.command("demo")
    def demo(ctx: typer.Context) -> None:
        """Start the local stack and round-trip one store event through Kafka."""
        import datetime as dt
        import uuid

        from confluent_kafka import Consumer, Producer
        from rich.console import Console

        from dicomflow.cli import settings_of
        from dicomflow.models import DicomStoreMeta, decode, encode, now, uid_hash
        from dicomflow.stack import LocalStack

        console = Console()
        settings = settings_of(ctx)
        for s in LocalStack(settings).up():
            console.print(f"{s.name}: running, PID {s.pid}, {s.address}")
        event = DicomStoreMeta(
            trace_id=str(uuid.uuid4()), worker_node_id=settings.worker_node_id, tenant_id="demo", patient_id="DEMO",
            study_uid="1.2.3", series_uid="1.2.3.4", sop_uid="1.2.3.4.5", file_size=0, file_path="/dev/null",
            transfer_syntax_uid="1.2.840.10008.1.2.1", number_of_frames=1, created_time=now(),
            series_uid_hash=uid_hash("1.2.3.4"), study_uid_hash=uid_hash("1.2.3"), target_ts="1.2.840.10008.1.2.1",
            study_date=dt.date.today(), transfer_status="NoNeedTransfer", source_ip="127.0.0.1", source_ae="DEMO",
        )
        producer = Producer({"bootstrap.servers": settings.kafka.brokers, "acks": "all", "enable.idempotence": True})
        producer.produce(settings.topics.main, encode(event), key=event.key())
        producer.flush(30)
        consumer = Consumer({"bootstrap.servers": settings.kafka.brokers, "group.id": f"demo-{uuid.uuid4().hex}",
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([settings.topics.main])
        try:
            for _ in range(120):
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None and decode(msg.value(), DicomStoreMeta) == event:
                    console.print(f"store event {event.trace_id} round-tripped through {settings.topics.main}")
                    return
        finally:
            consumer.close()
        raise typer.Exit(1)
