"""A local S3 server: S3Proxy (``org.gaul:s3proxy``) with its filesystem provider.

It speaks the real S3 protocol (SigV4 authentication, multipart uploads,
ranged GETs), so the ``s3`` storage backend is exercised here as against AWS
S3 or MinIO; but its filesystem provider does not fsync, so it is a store for
tests and demos only, never production (docs/storage.md).

- the jar: ``s3proxy-<version>-jar-with-dependencies.jar`` from Maven Central,
  resolved like Kafka's (:func:`._maven.resolve_jars`) into ``<stack dir>/cache``;
  it needs Java 17;
- its folder ``<stack dir>/s3``: ``s3proxy.properties`` and ``client.toml``
  (both 0600: they hold the credential), ``data/<bucket>/`` (the objects),
  ``s3proxy.log`` and the pid file;
- the credentials: drawn at random at each start (never committed, never
  reused across starts); ``client.toml`` holds the ``[storage]`` settings a
  client needs (pass it with ``--config``), and :meth:`S3ProxyServer.fill`
  puts them into a :class:`~dicomflow.settings.Settings` whose
  ``storage.s3.endpoint`` is unset;
- the bucket ``storage.s3.bucket``: a folder under ``data/`` (what the
  filesystem provider calls a container), created before the server starts.

Only started on request (``stack up --s3`` or ``[stack] s3 = true``).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dicomflow.errors import StackError
from dicomflow.settings import Settings, StackSettings, StorageS3Settings
from dicomflow.stack._maven import resolve_jars
from dicomflow.stack._proc import ensure_port_free, kill_pid, log_tail, pid_alive, read_pid, stop_pid, wait_port
from dicomflow.stack._tls import _write_private

log = logging.getLogger(__name__)

#: The newest release on Maven Central when this was written (``mvn dependency:get ...:RELEASE``); Java 17.
S3PROXY_VERSION = "4.1.0"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dicomflow.local</groupId><artifactId>s3proxy-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.gaul</groupId><artifactId>s3proxy</artifactId><version>{version}</version>
      <classifier>jar-with-dependencies</classifier>
      <exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>
    </dependency>
  </dependencies>
</project>
"""

_PROPERTIES = """# written by dicomflow's local stack at each start; holds the credential (0600)
s3proxy.endpoint=http://127.0.0.1:{port}
s3proxy.authorization=aws-v4
s3proxy.identity={key}
s3proxy.credential={secret}
jclouds.provider=filesystem
jclouds.filesystem.basedir={data}
"""

#: JVM heap of the server: it streams bodies, so a small heap serves multipart uploads too.
_HEAP_MB = 384

#: Servers started by this process and left running on purpose (see KafkaBroker).
_DETACHED: list[subprocess.Popen[bytes]] = []


@dataclass(frozen=True)
class S3ProxyStatus:
    running: bool
    pid: int | None
    address: str
    log_file: Path


class S3ProxyServer:
    """Install (jar), configure, start, stop and report the local S3Proxy."""

    def __init__(self, settings: StackSettings, s3: StorageS3Settings) -> None:
        self.settings = settings
        self.bucket = s3.bucket
        self.home = settings.dir.resolve() / "s3"
        self.data = self.home / "data"
        self.jars = settings.dir.resolve() / "cache" / f"s3proxy-{S3PROXY_VERSION}"
        self.properties = self.home / "s3proxy.properties"
        self.client_file = self.home / "client.toml"
        self.pid_file = self.home / "s3proxy.pid"
        self.log_file = self.home / "s3proxy.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.settings.s3_port}"

    def install(self) -> Path:
        """The jar-with-dependencies, resolved with Maven into the cache (once).

        Raises:
            StackError: Java or Maven missing, or Maven could not resolve it.
        """
        if not (self.jars / ".complete").exists():
            log.info("resolving org.gaul:s3proxy:%s (jar-with-dependencies) from Maven Central", S3PROXY_VERSION)
        resolve_jars(_POM.format(version=S3PROXY_VERSION), self.jars, f"S3Proxy {S3PROXY_VERSION}",
                     expect="s3proxy-*-jar-with-dependencies.jar", extra_args=("-DexcludeTransitive=true",))
        return next(self.jars.glob("s3proxy-*-jar-with-dependencies.jar"))

    def pid(self) -> int | None:
        """The server's PID if it runs (a reused PID of another program does not count)."""
        pid = read_pid(self.pid_file)
        if not pid_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid
        return pid if b"s3proxy" in cmdline else None

    def _write_config(self, *, keep_credentials: bool = False) -> None:
        """New random credentials (or, with ``keep_credentials``, the last ones), the properties and client files
        (0600), the bucket's folder."""
        kept = self.client_settings(StorageS3Settings()) if keep_credentials else None
        if kept is not None:
            key, secret = kept.access_key_id, kept.secret_access_key
        else:
            key, secret = "dicomflow-" + secrets.token_hex(8), secrets.token_urlsafe(30)
        # The filesystem provider reads a folder or file that others may read as a public-read
        # ACL (anonymous GETs allowed): the bucket's folder is 0700, and the server runs with umask 077.
        bucket = self.data / self.bucket
        bucket.mkdir(mode=0o700, parents=True, exist_ok=True)
        bucket.chmod(0o700)
        _write_private(self.properties, _PROPERTIES.format(
            port=self.settings.s3_port, key=key, secret=secret, data=self.data).encode())
        client = (
            "# the local stack's S3Proxy (written by `dicomflow stack up --s3`; use with --config)\n"
            '[storage]\nbackend = "s3"\n\n[storage.s3]\n'
            f'endpoint = "{self.endpoint}"\nbucket = "{self.bucket}"\nregion = "us-east-1"\n'
            f'access_key_id = "{key}"\nsecret_access_key = "{secret}"\npath_style = true\n'
        )
        _write_private(self.client_file, client.encode())

    def start(self, timeout_s: float = 60.0, *, keep_credentials: bool = False) -> int:
        """Start the server if it is not running; return its PID once it answers HTTP.

        Each start draws new credentials, unless ``keep_credentials``: a restart
        after a crash (the fault suite's SIGKILL) that running clients must
        survive with the credentials they hold.

        Raises:
            StackError: Java or the jar missing, the port taken, or no answer in
                time (naming the log file).
        """
        running = self.pid()
        if running:
            return running
        jar = self.install()
        ensure_port_free(self.settings.s3_port, "S3Proxy")
        self._write_config(keep_credentials=keep_credentials)
        cmd = ["java", f"-Xmx{_HEAP_MB}m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
               "-jar", str(jar), "--properties", str(self.properties)]
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=self.home, umask=0o077)
        _DETACHED.append(proc)
        self.pid_file.write_text(f"{proc.pid}\n")
        log.info("S3Proxy starting, PID %s, %s, bucket %s", proc.pid, self.endpoint, self.bucket)
        try:
            wait_port(self.settings.s3_port, timeout_s, proc.pid, "S3Proxy")
            self._wait_answering(timeout_s)
        except StackError as exc:
            self.stop()  # not left running half-configured: the next start begins afresh
            raise StackError(f"{exc}; see {self.log_file}; last lines:{log_tail(self.log_file)}") from exc
        return proc.pid

    def _wait_answering(self, timeout_s: float) -> None:
        """Return once an unsigned request gets an S3 answer (403: SigV4 is enforced)."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/{self.bucket}", timeout=5) as resp:
                    last = f"HTTP {resp.status} without credentials"  # anonymous access: not what we configured
                    raise StackError(f"S3Proxy at {self.endpoint} answered an unsigned request ({last})")
            except urllib.error.HTTPError as exc:
                exc.close()  # it holds the response's socket
                if exc.code == 403:
                    return
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise StackError(f"S3Proxy at {self.endpoint} did not answer within {timeout_s:.0f} s: {last}")

    def client_settings(self, base: StorageS3Settings) -> StorageS3Settings | None:
        """``base`` with the running server's endpoint and credentials (None: it never started here)."""
        try:
            table = tomllib.loads(self.client_file.read_text())["storage"]["s3"]
        except (OSError, tomllib.TOMLDecodeError, KeyError):
            return None
        return dataclasses.replace(
            base, endpoint=table["endpoint"], bucket=table["bucket"], region=table["region"],
            access_key_id=table["access_key_id"], secret_access_key=table["secret_access_key"], path_style=True)

    def fill(self, settings: Settings) -> Settings:
        """``settings`` pointed at this server when it runs and ``storage.s3.endpoint`` is unset.

        An endpoint set by the user (AWS, MinIO) is never overridden; the
        backend (``storage.backend``) is left as configured.
        """
        if settings.storage.s3.endpoint or self.pid() is None:
            return settings
        s3 = self.client_settings(settings.storage.s3)
        if s3 is None:
            return settings
        return dataclasses.replace(settings, storage=dataclasses.replace(settings.storage, s3=s3))

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL after 15 s)."""
        pid = self.pid()
        if pid:
            stop_pid(pid, 15.0)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the server (fault injection)."""
        pid = self.pid()
        if pid:
            kill_pid(pid)

    def status(self) -> S3ProxyStatus:
        pid = self.pid()
        return S3ProxyStatus(running=pid is not None, pid=pid, address=f"{self.endpoint}/{self.bucket}",
                             log_file=self.log_file)


__all__ = ["S3PROXY_VERSION", "S3ProxyServer", "S3ProxyStatus"]
