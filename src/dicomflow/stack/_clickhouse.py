"""A local ClickHouse server from Debian's ``clickhouse-server`` package, with our own config.

The package's ``/etc/clickhouse-server`` files are not used: the server gets a
config and a users file written here (127.0.0.1 only, the stack's ports, state
under ``<stack dir>/clickhouse``, time zone UTC so that wire datetimes, which
carry no zone, are stored as written; new Kafka consumer groups start at the
beginning of their topics; Kafka-engine blocks flushed every second). Debian's 18.16 server runs as root
without complaint, so no dedicated user is needed.

Only started on request (``dicomflow stack up --clickhouse`` or
``[stack] clickhouse = true``): the demo and most tests do not need it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from dicomflow.errors import StackError
from dicomflow.settings import StackSettings
from dicomflow.stack._proc import ensure_port_free, kill_pid, pid_alive, read_pid, stop_pid, wait_port

log = logging.getLogger(__name__)

#: Where Debian's package puts the server (``clickhouse-server``) binary.
SERVER_BINARIES = ("/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server", "/usr/bin/clickhouse")

_CONFIG = """<?xml version="1.0"?>
<!-- Written by dicomflow's local stack; rewritten at every start. -->
<yandex>
  <logger>
    <level>information</level>
    <log>{log}</log>
    <errorlog>{errlog}</errorlog>
    <size>20M</size>
    <count>2</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <path>{data}/</path>
  <tmp_path>{data}/tmp/</tmp_path>
  <user_files_path>{data}/user_files/</user_files_path>
  <format_schema_path>{data}/format_schemas/</format_schema_path>
  <users_config>{users}</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>64</max_concurrent_queries>
  <mlock_executable>false</mlock_executable>
  <!-- librdkafka settings of every Kafka-engine table: a new consumer group starts from
       the beginning of its topics (as Doris's OFFSET_BEGINNING), not from their end. -->
  <kafka>
    <auto_offset_reset>smallest</auto_offset_reset>
  </kafka>
</yandex>
"""

_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>2000000000</max_memory_usage>
      <max_threads>2</max_threads>
      <!-- Kafka-engine tables flush a block at least this often (default 7.5 s). -->
      <stream_flush_interval_ms>1000</stream_flush_interval_ms>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries><errors>0</errors><result_rows>0</result_rows>
        <read_rows>0</read_rows><execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
"""


@dataclass(frozen=True)
class ClickHouseStatus:
    running: bool
    pid: int | None
    address: str
    log_file: Path


def find_server() -> Path | None:
    """The ClickHouse server binary, if installed."""
    for candidate in SERVER_BINARIES:
        if Path(candidate).exists():
            return Path(candidate)
    found = shutil.which("clickhouse-server")
    return Path(found) if found else None


#: Servers started by this process and left running on purpose (see KafkaBroker).
_DETACHED: list[subprocess.Popen[bytes]] = []


class ClickHouseServer:
    """Write the config, start, stop and report one local ClickHouse server."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.home = settings.dir.resolve() / "clickhouse"
        self.data = self.home / "data"
        self.config_file = self.home / "config.xml"
        self.users_file = self.home / "users.xml"
        self.log_file = self.home / "clickhouse-server.log"
        self.err_file = self.home / "clickhouse-server.err.log"
        self.pid_file = self.home / "clickhouse.pid"

    @property
    def url(self) -> str:
        """The HTTP interface."""
        return f"http://127.0.0.1:{self.settings.clickhouse_http_port}"

    def _write_config(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.users_file.write_text(_USERS)
        self.config_file.write_text(_CONFIG.format(
            log=escape(str(self.log_file)), errlog=escape(str(self.err_file)), data=escape(str(self.data)),
            users=escape(str(self.users_file)), http_port=self.settings.clickhouse_http_port,
            tcp_port=self.settings.clickhouse_tcp_port,
        ))

    def pid(self) -> int | None:
        """The server's PID if it runs (a reused PID of another program does not count)."""
        pid = read_pid(self.pid_file)
        if not pid_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid
        return pid if b"clickhouse" in cmdline else None

    def start(self, timeout_s: float = 60.0) -> int:
        """Start the server if it is not running; return its PID once it answers ``SELECT 1``.

        Raises:
            StackError: the package is missing, a port is taken, or the server
                did not answer in time (naming its log files).
        """
        running = self.pid()
        if running:
            self.wait_ready(timeout_s)
            return running
        binary = find_server()
        if binary is None:
            raise StackError("ClickHouse is not installed: install Debian's `clickhouse-server` package "
                             "(scripts/bootstrap.sh does it for the test suite)")
        ensure_port_free(self.settings.clickhouse_http_port, "ClickHouse (HTTP)")
        ensure_port_free(self.settings.clickhouse_tcp_port, "ClickHouse (native)")
        self._write_config()
        with open(self.home / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                [str(binary), f"--config-file={self.config_file}"], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.home,
            )
        _DETACHED.append(proc)
        self.pid_file.write_text(f"{proc.pid}\n")
        log.info("ClickHouse starting, PID %s, %s", proc.pid, self.url)
        try:
            wait_port(self.settings.clickhouse_http_port, timeout_s, proc.pid, "ClickHouse")
            self.wait_ready(timeout_s)
        except StackError as exc:
            raise StackError(f"{exc}; see {self.err_file} and {self.home / 'stdout.log'}") from exc
        return proc.pid

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Return once the HTTP interface answers a query."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/?query=SELECT%201", timeout=5) as resp:
                    if resp.read().strip() == b"1":
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.3)
        raise StackError(f"ClickHouse at {self.url} did not answer within {timeout_s:.0f} s: {last}")

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL after 30 s)."""
        pid = self.pid()
        if pid:
            stop_pid(pid, 30.0)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the server (fault injection)."""
        pid = self.pid()
        if pid:
            kill_pid(pid)

    def status(self) -> ClickHouseStatus:
        pid = self.pid()
        return ClickHouseStatus(running=pid is not None, pid=pid, address=self.url, log_file=self.err_file)


__all__ = ["ClickHouseServer", "ClickHouseStatus", "find_server"]
