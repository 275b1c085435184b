"""The local Apache Kafka: one node, or a cluster of N nodes on 127.0.0.1 (KRaft).

Every node is a *combined* KRaft node (``process.roles=broker,controller``):
one JVM per node that is both a broker and a voter of the controller quorum.
Why combined rather than separate controllers: three processes instead of
six on a two-core machine, and a node kill takes out a broker and a voter at
once, which is the harder case for failover (the quorum must elect a new
active controller while partition leaders move). Production deployments
usually separate them; dicomflow's clients cannot tell the difference.

The jars come from Maven Central (``org.apache.kafka:kafka_2.13`` and its
runtime dependencies), resolved once by Maven into ``<stack dir>/cache``
(which may be a symlink to another stack's cache); a second start downloads
nothing. Where each node lives and listens is :mod:`._layout`.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from dicomflow.errors import StackError
from dicomflow.settings import StackSettings
from dicomflow.stack._kafka_probe import wait_served
from dicomflow.stack._kafka_security import ADMIN_USER, KafkaSecurity
from dicomflow.stack._layout import ClusterLayout, NodeSpec
from dicomflow.stack._maven import resolve_jars
from dicomflow.stack._proc import ensure_port_free, kill_pid, log_tail, pid_alive, read_pid, stop_pid, wait_port

log = logging.getLogger(__name__)

_LOG4J_VERSION = "2.24.3"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dicomflow.local</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """Configuration:
  Appenders:
    RollingFile:
      name: file
      fileName: "{log}"
      filePattern: "{log}.%i"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
      Policies:
        SizeBasedTriggeringPolicy:
          size: 20MB
      DefaultRolloverStrategy:
        max: 3
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: file
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.controller
        level: WARN
"""


#: Brokers started by this process and left running on purpose.
_DETACHED: list[subprocess.Popen[bytes]] = []


@dataclass(frozen=True)
class KafkaStatus:
    running: bool
    pid: int | None
    bootstrap: str
    log_file: Path
    node_id: int = 1


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes in URL-safe base64, never starting with ``-``.

    The storage tool takes the id as a command-line argument, and one that
    starts with ``-`` reads as an option (``--cluster-id: expected one
    argument``); Kafka's own ``Uuid.randomUuid`` draws again for the same
    reason. One id in 64 would start with it.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaBroker:
    """Install (jars), format, start, stop and report one local node (the only one, or one of a cluster)."""

    def __init__(self, settings: StackSettings, spec: NodeSpec | None = None, layout: ClusterLayout | None = None,
                 security: KafkaSecurity | None = None) -> None:
        self.settings = settings
        self.layout = layout if layout is not None else ClusterLayout.of(settings, size=1, secure=False)
        self.spec = spec if spec is not None else self.layout.nodes[0]
        self.security = security
        self.home = self.spec.home
        self.jars = settings.dir.resolve() / "cache" / f"kafka-{settings.kafka_version}"
        self.data = self.home / "data"
        self.pid_file = self.home / "kafka.pid"
        self.log_file = self.home / "server.log"

    @property
    def node_id(self) -> int:
        return self.spec.node_id

    @property
    def bootstrap(self) -> str:
        """This node's client address."""
        return self.spec.address

    # ------------------------------------------------------------------ install

    def install(self) -> Path:
        """Resolve the broker's jars with Maven into the cache folder (once).

        Raises:
            StackError: Java or Maven missing, or Maven could not resolve the artifact.
        """
        if not (self.jars / ".complete").exists():
            log.info("resolving org.apache.kafka:kafka_2.13:%s from Maven Central", self.settings.kafka_version)
        return resolve_jars(_POM.format(version=self.settings.kafka_version, log4j=_LOG4J_VERSION), self.jars,
                            f"Kafka {self.settings.kafka_version}", expect="kafka_2.13-*.jar")

    # ------------------------------------------------------------------ config

    def _listener_lines(self) -> list[str]:
        s = self.spec
        if self.security is None:
            return [
                f"listeners=PLAINTEXT://127.0.0.1:{s.port},CONTROLLER://127.0.0.1:{s.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
            ]
        # Clients and brokers talk SASL_SSL; the controller quorum stays on loopback plaintext (local stack only).
        return [
            f"listeners=SASL_SSL://127.0.0.1:{s.port},CONTROLLER://127.0.0.1:{s.controller_port}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{s.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=SASL_SSL",
            *self.security.broker_properties(),
        ]

    def _write_config(self) -> Path:
        layout = self.layout
        self.home.mkdir(parents=True, exist_ok=True)
        props = self.home / "server.properties"
        rf, isr = layout.replicas(3), layout.replicas(2)
        cluster = [] if layout.size == 1 else [
            # Internal topics replicated like the data topics; a killed node is fenced (and
            # its partitions led elsewhere) after 6 s without a heartbeat instead of 9 s.
            f"default.replication.factor={rf}",
            "broker.heartbeat.interval.ms=1000",
            "broker.session.timeout.ms=6000",
        ]
        lines = [
            "process.roles=broker,controller",
            f"node.id={self.spec.node_id}",
            f"controller.quorum.voters={layout.voters}",
            *self._listener_lines(),
            f"log.dirs={self.data}",
            "num.partitions=1",
            "auto.create.topics.enable=true",
            f"offsets.topic.replication.factor={rf}",
            "offsets.topic.num.partitions=4",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={isr}",
            "transaction.state.log.num.partitions=4",
            f"share.coordinator.state.topic.replication.factor={rf}",
            f"share.coordinator.state.topic.min.isr={isr}",
            *cluster,
            "group.initial.rebalance.delay.ms=0",
            "num.network.threads=2",
            "num.io.threads=4",
            "log.retention.hours=168",
            "",
        ]
        text = "\n".join(lines)
        if self.security is not None:  # holds the broker user's password
            from dicomflow.stack._tls import _write_private

            _write_private(props, text.encode())
        else:
            props.write_text(text)
        (self.home / "log4j2.yaml").write_text(_LOG4J2.format(log=self.log_file))
        return props

    def _cluster_id(self) -> str:
        """One id for every node of a cluster (kept in the cluster's folder); a fresh one for a single node."""
        if self.layout.size == 1:
            return new_cluster_id()
        id_file = self.layout.root / "cluster.id"
        if not id_file.exists():
            # The nodes are formatted in parallel: the first to link its draft wins and every node
            # reads the winner's id. (A node formatted with another id can never vote with the
            # rest: INCONSISTENT_CLUSTER_ID, then it gives up registering after 60 s.)
            self.layout.root.mkdir(parents=True, exist_ok=True)
            draft = id_file.with_name(f"cluster.id.{uuid.uuid4().hex}")
            draft.write_text(new_cluster_id() + "\n")
            try:
                os.link(draft, id_file)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        return id_file.read_text().strip()

    def _format(self, props: Path) -> None:
        """Format the KRaft storage on first start (meta.properties marks it done)."""
        meta = self.data / "meta.properties"
        if meta.exists():
            if self.layout.size > 1:
                self._check_cluster_id(meta)
            return
        extra = self.security.scram_args() if self.security is not None else []
        proc = subprocess.run(
            ["java", "-cp", f"{self.jars}/*", "kafka.tools.StorageTool", "format", "-t", self._cluster_id(),
             "-c", str(props), *extra],
            capture_output=True, text=True, check=False,
            env={**os.environ, "KAFKA_LOG4J_OPTS": ""},
        )
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).strip()[-1500:]
            if self.security is not None:
                out = out.replace(self.security.admin_password, "***").replace(self.security.client_password, "***")
            raise StackError(f"formatting Kafka storage in {self.data} failed: {out}")

    def _check_cluster_id(self, meta: Path) -> None:
        """Refuse a node formatted for another cluster: it would wait 60 s for votes it cannot get, then exit."""
        found = next((line.split("=", 1)[1].strip() for line in meta.read_text().splitlines()
                      if line.startswith("cluster.id=")), None)
        wanted = self._cluster_id()
        if found != wanted:
            raise StackError(
                f"Kafka node {self.node_id} in {self.data} was formatted for cluster {found}, but the cluster "
                f"in {self.layout.root} is {wanted}; stop the stack and remove {self.layout.root} to start afresh")

    # ------------------------------------------------------------------ lifecycle

    def pid(self) -> int | None:
        """The broker's PID if it runs; a stale pid file (PID reused) does not count."""
        pid = read_pid(self.pid_file)
        if not pid_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid
        return pid if b"kafka.Kafka" in cmdline else None

    def launch(self) -> int:
        """Start the node's JVM if it is not running (no waiting); return its PID.

        Raises:
            StackError: a port is taken, or the storage cannot be formatted.
        """
        running = self.pid()
        if running:
            return running
        self.install()
        ensure_port_free(self.spec.port, f"Kafka node {self.node_id}")
        ensure_port_free(self.spec.controller_port, f"Kafka controller of node {self.node_id}")
        props = self._write_config()
        self._format(props)
        heap = self.settings.kafka_heap_mb
        cmd = [
            "java", f"-Xms{heap // 2}m", f"-Xmx{heap}m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.home}",
            "-cp", f"{self.jars}/*", "kafka.Kafka", str(props),
        ]
        with open(self.home / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.home,
            )
        # The broker outlives this object (and this process): keep the handle so
        # that Popen does not warn about a child it never waited for.
        _DETACHED.append(proc)
        self.pid_file.write_text(f"{proc.pid}\n")
        log.info("Kafka node %d starting, PID %s, %s", self.node_id, proc.pid, self.bootstrap)
        return proc.pid

    def wait_listening(self, timeout_s: float) -> None:
        """Wait until the node's client port accepts connections.

        Raises:
            StackError: it exited or did not listen in time (naming its logs).
        """
        try:
            wait_port(self.spec.port, timeout_s, self.pid() or read_pid(self.pid_file), f"Kafka node {self.node_id}")
        except StackError as exc:
            stdout = self.home / "stdout.log"
            tail = log_tail(stdout) or log_tail(self.log_file)
            raise StackError(f"{exc}; see {self.log_file} and {stdout}; last lines:{tail}") from exc

    def start(self, timeout_s: float = 90.0) -> int:
        """Start this node if it is not running; return its PID once the cluster serves requests through it."""
        pid = self.launch()
        self.wait_listening(timeout_s)
        try:
            self.wait_ready(timeout_s)
        except StackError as exc:
            raise StackError(f"{exc}; see {self.log_file} and {self.home / 'stdout.log'}") from exc
        return pid

    def client_properties(self) -> dict[str, str]:
        """librdkafka properties the stack's own probes use (the broker user on a secure stack)."""
        return self.security.client_properties(ADMIN_USER) if self.security is not None else {}

    def wait_ready(self, timeout_s: float = 90.0, bootstrap: str | None = None) -> None:
        """Return once a produce (acks=all) and a consume of the same record succeed.

        On a cluster the record goes through ``bootstrap`` (default: this
        node), and the node must be registered in the cluster's metadata.
        """
        wait_served(bootstrap or self.bootstrap, self.client_properties(), timeout_s,
                    node_id=self.node_id if self.layout.size > 1 else None)

    def stop(self) -> None:
        """Stop the broker by its PID (controlled shutdown, then SIGKILL after 30 s)."""
        pid = read_pid(self.pid_file)
        if pid and pid_alive(pid):
            stop_pid(pid, 30.0)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the broker (fault injection): no controlled shutdown."""
        pid = self.pid()
        if pid:
            kill_pid(pid)

    def status(self) -> KafkaStatus:
        pid = self.pid()
        return KafkaStatus(running=pid is not None, pid=pid, bootstrap=self.bootstrap, log_file=self.log_file,
                           node_id=self.node_id)
