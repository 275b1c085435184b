"""The storage layer's rates at 25 kB: filesystem against S3 (S3Proxy), and the S3 client choice.

    python benchmarks/bench_blobs.py [--objects 300] [--size 25600] [--runs 3] [--no-fsync] [--boto3]

For each backend, in alternated runs (filesystem, s3, filesystem, s3, ...)
after one untimed warm-up run each, in the same process:

* **put**: ``BlobStore.put`` of ``--objects`` distinct objects of ``--size`` bytes;
* **get**: ``BlobStore.read`` of each of them;
* **range**: ``BlobStore.read_range`` of the first 4 kB of each (what a header parse fetches).

The median of ``--runs`` is reported, in objects per second and ms per object.
The filesystem writes with fsync (the default guarantee) unless ``--no-fsync``.

``--boto3`` also times boto3's ``put_object`` / ``get_object`` on the same
server in the same alternation (boto3 is no dependency: ``pip install boto3``),
the measurement behind the choice of obstore (blobs/s3.py, docs/storage.md).

Needs no running stack: it starts a private S3Proxy on a free port in a
temporary folder (the jar from the stack's cache, ``DICOMFLOW_STACK_DIR``),
and stops it at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from dicomflow.blobs import BlobStore, FilesystemStore
from dicomflow.blobs.s3 import S3Store
from dicomflow.settings import StackSettings, StorageS3Settings, load_settings
from dicomflow.stack import S3ProxyServer, free_port

Op = Callable[[str], None]


def _timed(n: int, op: Op, keys: list[str]) -> float:
    """ms per object of ``op`` over ``keys``."""
    start = time.perf_counter()
    for key in keys:
        op(key)
    return (time.perf_counter() - start) / n * 1000


def _ops(store: BlobStore, data: bytes) -> dict[str, Op]:
    return {
        "put": lambda k: store.put(k, data) and None,
        "get": lambda k: store.read(k) and None,
        "range 4 kB": lambda k: store.read_range(k, 0, 4096) and None,
    }


def _boto3_ops(s3: StorageS3Settings, data: bytes) -> dict[str, Op]:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key_id,
                          aws_secret_access_key=s3.secret_access_key, region_name=s3.region,
                          config=Config(s3={"addressing_style": "path"}))
    return {
        "put": lambda k: client.put_object(Bucket=s3.bucket, Key=f"boto3/{k}", Body=data) and None,
        "get": lambda k: client.get_object(Bucket=s3.bucket, Key=f"boto3/{k}")["Body"].read() and None,
        "range 4 kB": lambda k: client.get_object(Bucket=s3.bucket, Key=f"boto3/{k}", Range="bytes=0-4095")["Body"].read()
        and None,
    }


def run(args: argparse.Namespace, s3: StorageS3Settings, root: Path) -> dict[str, dict[str, list[float]]]:
    data = os.urandom(args.size)
    candidates: dict[str, dict[str, Op]] = {
        "filesystem": _ops(FilesystemStore(root, fsync=not args.no_fsync), data),
        "s3 (obstore)": _ops(S3Store(s3), data),
    }
    if args.boto3:
        candidates["s3 (boto3)"] = _boto3_ops(s3, data)
    results: dict[str, dict[str, list[float]]] = {name: {op: [] for op in ops} for name, ops in candidates.items()}
    for run_no in range(args.runs + 1):  # run 0 is the warm-up
        for name, ops in candidates.items():
            keys = [f"r{run_no}/{uuid.uuid4().hex}/{i}.dcm" for i in range(args.objects)]
            for op_name, op in ops.items():
                ms = _timed(args.objects, op, keys)
                if run_no:
                    results[name][op_name].append(ms)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--size", type=int, default=25 * 1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--boto3", action="store_true")
    args = parser.parse_args(argv)
    shared = load_settings(None, os.environ)
    with tempfile.TemporaryDirectory(prefix="dicomflow-bench-blobs-") as tmp:
        home = Path(tmp)
        (home / "cache").symlink_to(shared.stack.dir.resolve() / "cache", target_is_directory=True)
        server = S3ProxyServer(StackSettings(dir=home, s3_port=free_port()), StorageS3Settings())
        server.start()
        try:
            s3 = server.client_settings(StorageS3Settings())
            assert s3 is not None
            results = run(args, s3, home / "storage")
        finally:
            server.stop()
    fsync = "without fsync" if args.no_fsync else "with fsync"
    print(f"{args.objects} objects of {args.size} bytes, median of {args.runs} alternated runs "
          f"(filesystem {fsync}; S3Proxy {server.endpoint}, filesystem provider)")
    print(f"{'backend':<14} {'operation':<11} {'ms/object':>10} {'objects/s':>10}   runs (ms/object)")
    for name, ops in results.items():
        for op_name, runs in ops.items():
            med = statistics.median(runs)
            print(f"{name:<14} {op_name:<11} {med:>10.2f} {1000 / med:>10.0f}   {', '.join(f'{r:.2f}' for r in runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
