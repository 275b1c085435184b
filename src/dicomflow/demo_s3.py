"""``dicomflow demo --s3``'s last check: every acknowledged instance is an object in the bucket, and where."""

from __future__ import annotations

from typing import Any

from dicomflow.settings import Settings


def where_objects_are(settings: Settings, succeeded: list[str], console: Any) -> bool:
    """Check that every acknowledged instance's receipt names an object in the bucket; say where they are."""
    import psycopg

    from dicomflow.blobs import BlobError, open_store
    from dicomflow.stack import LocalStack

    with psycopg.connect(settings.database.conninfo()) as conn:
        paths = [r[0] for r in conn.execute("SELECT DISTINCT file_path FROM dicom_object_meta WHERE sop_uid = ANY(%s)",
                                            (succeeded,)).fetchall()]
    store = open_store(settings.storage)
    stored, elsewhere = 0, [p for p in paths if not p.startswith("s3://")]
    try:
        stored = sum(1 for p in paths if p.startswith("s3://") and store.exists(store.key_of(p)))
    except BlobError as exc:
        console.print(f"[red]✗[/] S3: {exc}")
    s3 = settings.storage.s3
    server = LocalStack(settings).s3proxy
    folder = server.data / s3.bucket / s3.prefix if s3.endpoint == server.endpoint else None
    console.print(f"[{'green]✓' if stored == len(succeeded) else 'red]✗'}[/] objects in S3: {stored} of "
                  f"{len(succeeded)} acknowledged instances in bucket {s3.bucket}, prefix "
                  f"{s3.prefix or '(none)'}, at {s3.endpoint}" + (f"; S3Proxy keeps them in {folder}" if folder else ""))
    if elsewhere:
        console.print(f"[red]✗[/] {len(elsewhere)} receipts name no S3 object, e.g. {elsewhere[0]}")
    return stored == len(succeeded) and not elsewhere


__all__ = ["where_objects_are"]
