"""``dicomflow storage migrate`` against real PostgreSQL and a real S3 server (a private S3Proxy).

The index is filled through the store (``PgStore.write_batch``, the consumer's
own write) with receipts, instance rows, served copies and series thumbnails
whose files lie under the test's storage root, as the filesystem pipeline
leaves them; then the objects are migrated to S3 and back, and the bucket, the
files and the rows are checked byte by byte and column by column.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import msgspec
import psycopg
import pytest
from rich.console import Console

from dicomflow.blobs.s3 import S3Store
from dicomflow.models import DicomImageMeta, DicomStoreMeta
from dicomflow.settings import Settings, to_child_env
from dicomflow.stack import S3ProxyServer
from dicomflow.storage_migrate import MigrateOptions, Migration, Summary
from dicomflow.store import PgStore
from dicomflow.warehouse.synthetic import instance_messages
from tests.integration.s3_support import CHUNK, client_settings, private_s3proxy

SERVED_TS = "1.2.840.10008.1.2.1"


@pytest.fixture(scope="module")
def s3proxy(base_settings: Settings) -> Iterator[S3ProxyServer]:
    with private_s3proxy(base_settings) as server:
        yield server


@pytest.fixture
def mig_settings(settings: Settings, s3proxy: S3ProxyServer) -> Settings:
    """The test's settings with its own key prefix in the private bucket, the schema migrated."""
    s3 = dataclasses.replace(client_settings(s3proxy), prefix=f"mig-{uuid.uuid4().hex[:10]}/")
    with PgStore(settings.database) as store:
        store.migrate()
    return dataclasses.replace(settings, storage=dataclasses.replace(settings.storage, s3=s3))


def populate(settings: Settings, instances: int, *, series_size: int = 5, size: int = 3000,
             big: bool = False) -> list[str]:
    """Files and rows as the filesystem pipeline leaves them; returns every key the rows name.

    Each series has a thumbnail on its middle instance; every third instance a
    served copy (pixel_data_location), the others point at their original; the
    first instance was stored twice (two receipts). ``big``: the first file
    exceeds the multipart threshold.
    """
    root = settings.storage.root.resolve()
    run = uuid.uuid4().int % 1_000_000_000
    receipts: list[DicomStoreMeta] = []
    images: list[DicomImageMeta] = []
    keys: list[str] = []

    def put(key: str, length: int) -> str:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(length))
        keys.append(key)
        return str(path)

    for n in range(instances):
        series, index = divmod(n, series_size)
        receipt, image = instance_messages(run, series // 3, series, index, tenant="mig")
        folder = f"mig/20250304/{receipt.study_uid}/{receipt.series_uid}"
        original = put(f"{folder}/{receipt.sop_uid}.dcm", CHUNK + 1000 if big and n == 0 else size + n)
        receipts.append(msgspec.structs.replace(receipt, file_path=original))
        if n == 0:
            receipts.append(msgspec.structs.replace(receipt, trace_id=str(uuid.uuid4()), file_path=original))
        pixels = put(f"{folder}/.served/{receipt.sop_uid}.{SERVED_TS}.dcm", size) if n % 3 == 1 else original
        thumb = put(f"{folder}/.served/thumbnail.jpg", 700) if index == series_size // 2 else None
        images.append(msgspec.structs.replace(image, pixel_data_location=pixels, thumbnail_location=thumb))
    with PgStore(settings.database) as store:
        store.write_batch(receipts, [], images)
    return keys


def locations(settings: Settings) -> list[str]:
    """Every location column of every row, in a stable order."""
    with psycopg.connect(settings.database.conninfo()) as conn:
        rows = conn.execute(
            "SELECT file_path FROM dicom_object_meta UNION ALL SELECT pixel_data_location FROM dicom_image_meta"
            " UNION ALL SELECT thumbnail_location FROM dicom_image_meta WHERE thumbnail_location IS NOT NULL"
        ).fetchall()
    return sorted(r[0] for r in rows)


def migrate(settings: Settings, to: str, **options: object) -> Summary:
    return Migration(settings.storage, settings.database, MigrateOptions(to=to, **options)).run()  # type: ignore[arg-type]


def cli(settings: Settings, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "dicomflow.cli", "storage", "migrate", *args],
                            env=to_child_env(settings, os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def cell(out: str, label: str) -> str:
    """The value beside ``label`` in the summary table the command prints."""
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("│")]
        if len(parts) == 4 and parts[1] == label:
            return parts[2]
    raise AssertionError(f"no row {label!r} in:\n{out}")


def test_migrate_to_s3_then_back(mig_settings: Settings) -> None:
    keys = populate(mig_settings, 12, big=True)
    root = mig_settings.storage.root.resolve()
    bucket = S3Store(mig_settings.storage.s3)
    rows = len(locations(mig_settings))

    to_s3 = migrate(mig_settings, "s3", batch_size=4, jobs=3)
    assert to_s3.failed == [] and to_s3.rows_failed == 0
    assert (to_s3.copied, to_s3.present, to_s3.rows_updated) == (len(keys), 0, rows)
    assert to_s3.checks == {"etag": len(keys)}  # the multipart one too: its ETag is computed for the part size
    assert sorted(b.key for b in bucket.list()) == sorted(keys)
    for key in keys:
        assert bucket.read(key) == (root / key).read_bytes()
    assert all(loc.startswith(f"s3://{bucket.bucket}/{bucket.prefix}mig/") for loc in locations(mig_settings))
    assert (root / keys[0]).is_file()  # the source is kept by default

    again = migrate(mig_settings, "s3")
    assert (again.copied, again.present, again.rows_updated, again.rows_skipped) == (0, 0, 0, rows)

    originals = {k: (root / k).read_bytes() for k in keys}
    gone = keys[::2]
    for key in gone:
        (root / key).unlink()
    back = migrate(mig_settings, "filesystem", delete_source=True, batch_size=5)
    assert back.failed == [] and back.rows_failed == 0
    assert (back.copied, back.present, back.deleted) == (len(gone), len(keys) - len(gone), len(keys))
    assert back.checks == {"sha256": len(gone), "etag": len(keys) - len(gone)}
    for key in keys:
        assert (root / key).read_bytes() == originals[key]
    assert list(bucket.list()) == []
    assert all(loc.startswith(str(root / "mig")) for loc in locations(mig_settings))
    assert not list(root.glob(".migrate-*"))  # the scratch folder of the downloads is gone


def test_dry_run_changes_nothing(mig_settings: Settings) -> None:
    keys = populate(mig_settings, 6)
    before = locations(mig_settings)
    proc = cli(mig_settings, "--to", "s3", "--dry-run")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "dry run" in out
    assert "migrating to s3" in out and "6/6 instances" in out  # the progress bar (stderr), at its end
    assert cell(out, "objects would be copied").startswith(f"{len(keys)} (")
    assert cell(out, "rows would be repointed") == str(len(before))
    assert locations(mig_settings) == before
    assert list(S3Store(mig_settings.storage.s3).list()) == []


def test_missing_source_and_refused_location_are_reported(mig_settings: Settings, tmp_path: Path) -> None:
    keys = populate(mig_settings, 6)
    root = mig_settings.storage.root.resolve()
    missing = root / keys[0]
    missing.unlink()
    outside = tmp_path / "elsewhere.dcm"
    outside.write_bytes(b"x")
    with psycopg.connect(mig_settings.database.conninfo()) as conn:
        conn.execute("UPDATE dicom_image_meta SET thumbnail_location = %s WHERE thumbnail_location IS NOT NULL",
                     (str(outside),))

    summary = migrate(mig_settings, "s3")
    reasons = dict(summary.failed)
    assert reasons[str(missing)].startswith("source missing")
    assert "outside the storage root" in reasons[str(outside)]
    after = locations(mig_settings)
    assert after.count(str(missing)) == 3  # two receipts and the instance row, unchanged
    assert str(outside) in after
    assert summary.rows_failed == 4
    assert not [loc for loc in after if not loc.startswith("s3://") and loc not in (str(missing), str(outside))]
    console = Console(file=StringIO(), width=200)
    from dicomflow.cli.storage import print_summary

    print_summary(console, summary, MigrateOptions(to="s3"))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"{missing}: source missing" in text and cell(text, "objects failed") == "2"


def test_the_target_is_never_overwritten_and_sources_go_only_once_verified(mig_settings: Settings) -> None:
    keys = populate(mig_settings, 4)
    root = mig_settings.storage.root.resolve()
    bucket = S3Store(mig_settings.storage.s3)
    other = os.urandom((root / keys[0]).stat().st_size)  # same size, other bytes: a different object
    bucket.put(keys[0], other)
    bucket.put(keys[1], b"short")

    summary = migrate(mig_settings, "s3", delete_source=True)
    reasons = dict(summary.failed)
    assert "other bytes of the same size" in reasons[str(root / keys[0])]
    assert "holds 5 bytes" in reasons[str(root / keys[1])]
    assert bucket.read(keys[0]) == other and bucket.read(keys[1]) == b"short"  # left as they were
    assert (root / keys[0]).is_file() and (root / keys[1]).is_file()  # their sources kept, rows unchanged
    assert str(root / keys[0]) in locations(mig_settings)
    assert summary.deleted == len(keys) - 2
    for key in keys[2:]:
        assert not (root / key).exists() and bucket.exists(key)


def test_an_etag_of_another_part_size_is_checked_by_sha256(mig_settings: Settings) -> None:
    """An object uploaded in parts of another size (another client): its ETag is no MD5 we can compute."""
    keys = populate(mig_settings, 2, big=True)
    root = mig_settings.storage.root.resolve()
    assert migrate(mig_settings, "s3").checks == {"etag": len(keys)}  # uploaded in parts of CHUNK
    other = dataclasses.replace(mig_settings.storage.s3, multipart_chunk_bytes=CHUNK + 1024 * 1024)
    later = dataclasses.replace(mig_settings, storage=dataclasses.replace(mig_settings.storage, s3=other))
    big = (root / keys[0]).read_bytes()
    (root / keys[0]).unlink()
    back = migrate(later, "filesystem")
    assert back.failed == []
    assert (back.copied, back.present) == (1, len(keys) - 1)
    assert back.checks == {"sha256": 1, "etag": len(keys) - 1}  # the download read twice, the file read back
    assert (root / keys[0]).read_bytes() == big


def _object_files(server: S3ProxyServer, settings: Settings) -> dict[str, os.stat_result]:
    """The S3Proxy files behind the test's objects (its filesystem provider keeps one file per object)."""
    base = server.data / settings.storage.s3.bucket / settings.storage.s3.prefix.rstrip("/")
    return {p.relative_to(base).as_posix(): p.stat() for p in base.rglob("*") if p.is_file()}


def test_killed_run_resumes_without_copying_twice(mig_settings: Settings, s3proxy: S3ProxyServer) -> None:
    keys = populate(mig_settings, 300, series_size=10, size=1500)
    root = mig_settings.storage.root.resolve()
    proc = cli(mig_settings, "--to", "s3", "--batch-size", "5", "--jobs", "1", "--no-progress")
    deadline = time.monotonic() + 120
    with psycopg.connect(mig_settings.database.conninfo(), autocommit=True) as conn:
        while time.monotonic() < deadline and proc.poll() is None:
            row = conn.execute("SELECT count(*) FROM dicom_object_meta WHERE file_path LIKE 's3://%%'").fetchone()
            if row and row[0] >= 20:
                break
            time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed: give it more instances"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    total = len(locations(mig_settings))
    migrated = [loc for loc in locations(mig_settings) if loc.startswith("s3://")]
    assert 0 < len(migrated) < total

    in_bucket = s3proxy.data / mig_settings.storage.s3.bucket / mig_settings.storage.s3.prefix
    verified = {k: st for k, st in _object_files(s3proxy, mig_settings).items()
                if (in_bucket / k).read_bytes() == (root / k).read_bytes()}
    assert verified, "nothing was copied before the kill"

    rerun = cli(mig_settings, "--to", "s3", "--batch-size", "50", "--no-progress")
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    assert cell(out, "objects copied").startswith(f"{len(keys) - len(verified)} ("), out
    after = _object_files(s3proxy, mig_settings)
    for key, st in verified.items():  # the objects verified before the kill were not written again
        assert (after[key].st_ino, after[key].st_mtime_ns) == (st.st_ino, st.st_mtime_ns), key
    bucket = S3Store(mig_settings.storage.s3)
    assert sorted(after) == sorted(keys)
    for key in keys:
        assert bucket.read(key) == (root / key).read_bytes()
    assert all(loc.startswith("s3://") for loc in locations(mig_settings))
