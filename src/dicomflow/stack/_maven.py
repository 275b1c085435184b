"""Jars from Maven Central, resolved once by Maven into ``<stack dir>/cache/<name>``.

The one resolver of the stack: Kafka's jars (:mod:`._kafka`) and S3Proxy's
(:mod:`._s3proxy`) come through :func:`resolve_jars`. A ``.complete`` marker
says a folder is whole, so a second start downloads nothing; the cache may be
a symlink to another stack's cache.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from dicomflow.errors import StackError


def resolve_jars(pom: str, dest: Path, what: str, *, expect: str, extra_args: tuple[str, ...] = ()) -> Path:
    """Copy the dependencies ``pom`` declares into ``dest`` with Maven (once); return ``dest``.

    ``expect`` is a glob that must match a jar afterwards (the artifact asked for).

    Raises:
        StackError: Java or Maven missing, or Maven could not resolve the artifact.
    """
    marker = dest / ".complete"
    if marker.exists():
        return dest
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise StackError(f"`{tool}` is not on PATH; {what} needs Java 17+ and Maven to fetch its jars")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dicomflow-pom-") as tmp:
        pom_file = Path(tmp) / "pom.xml"
        pom_file.write_text(pom)
        cmd = [
            "mvn", "-q", "-B", "-f", str(pom_file), "dependency:copy-dependencies",
            f"-DoutputDirectory={dest}", "-DincludeScope=runtime", *extra_args,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StackError(f"Maven could not resolve {what}: {(proc.stdout + proc.stderr).strip()[-2000:]}")
    if not list(dest.glob(expect)):
        raise StackError(f"Maven finished but no {expect} is in {dest}")
    marker.write_text(what + "\n")
    return dest
