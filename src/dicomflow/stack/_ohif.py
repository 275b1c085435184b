"""The OHIF viewer's built files (npm ``@ohif/app``, its ``dist/``), installed once into ``<stack dir>/cache``.

``dicomflow web`` serves them at ``/viewer/`` (:mod:`dicomflow.web.viewer`).
Why ``npm pack`` and not ``npm install``: the package's ``dist/`` is the
whole built viewer; its dependencies (hundreds of packages) are only what it
was built from. ``npm pack`` fetches the one tarball (about 50 MB, through
npm's own cache and registry settings) and the ``dist/`` is unpacked from it:
about 8 s cold, nothing on a second start. The folder appears whole or not
at all (unpacked beside it, then renamed), so two ``stack up`` at once, or
one killed halfway, leave no half viewer behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from dicomflow.errors import StackError

log = logging.getLogger(__name__)

PACKAGE = "@ohif/app"


def install_ohif(version: str, dest: Path) -> Path:
    """Put ``@ohif/app@version``'s ``dist/`` at ``dest / "dist"`` (once); return that folder.

    Raises:
        StackError: npm is missing, or could not fetch the package, or the package has no ``dist/``.
    """
    dest = Path(os.path.abspath(dest))  # npm runs in the work folder: a relative path would name another place
    dist = dest / "dist"
    if (dest / ".complete").exists():
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise StackError(f"`npm` is not on PATH; the viewer needs it to fetch {PACKAGE} (apt-get install npm)")
    log.info("fetching %s@%s from the npm registry", PACKAGE, version)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        tarballs = _pack(npm, version, work)
        staged = work / dest.name
        _unpack_dist(tarballs[0], staged / "dist")
        (staged / ".complete").write_text(f"{PACKAGE}@{version}\n")
        try:
            os.rename(staged, dest)
        except OSError:
            if not (dest / ".complete").exists():  # not another install that finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dist


#: npm pack attempts: a registry hiccup (seen once as a failure with no output) must not fail a stack start.
_ATTEMPTS = 3


def _pack(npm: str, version: str, work: Path) -> list[Path]:
    """The package's tarball in ``work`` (``npm pack``, tried :data:`_ATTEMPTS` times).

    Raises:
        StackError: every attempt failed (npm's last words and exit code in the message).
    """
    problem = ""
    for attempt in range(1, _ATTEMPTS + 1):
        proc = subprocess.run([npm, "pack", f"{PACKAGE}@{version}", "--loglevel", "warn", "--pack-destination",
                               str(work)], cwd=work, capture_output=True, text=True, check=False, timeout=600)
        tarballs = list(work.glob("*.tgz"))
        if proc.returncode == 0 and len(tarballs) == 1:
            return tarballs
        problem = (f"exit code {proc.returncode}, {len(tarballs)} tarball(s): "
                   f"{(proc.stdout + proc.stderr).strip()[-2000:] or 'no output'}")
        log.warning("npm pack %s@%s failed (attempt %d of %d): %s", PACKAGE, version, attempt, _ATTEMPTS, problem)
        for t in tarballs:
            t.unlink()
        time.sleep(2.0 * attempt)
    raise StackError(f"npm could not fetch {PACKAGE}@{version}: {problem}")


def _unpack_dist(tarball: Path, into: Path) -> None:
    """The tarball's ``package/dist/`` as ``into`` (members checked: nothing lands outside it)."""
    prefix = "package/dist/"
    with tarfile.open(tarball, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and (m.isfile() or m.isdir())]
        if not any(m.name == prefix + "index.html" for m in members):
            raise StackError(f"{tarball.name} has no {prefix}index.html: not the built viewer")
        for m in members:
            m.name = m.name[len(prefix):]
        into.mkdir(parents=True)
        tar.extractall(into, members=[m for m in members if m.name], filter="data")
