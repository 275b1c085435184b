"""A single-node Apache Kafka broker (KRaft, combined broker + controller).

The broker's jars come from Maven Central (``org.apache.kafka:kafka_2.13`` and
its runtime dependencies), resolved once by Maven into a cache folder under the
stack directory; a second start downloads nothing.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from dicomflow.errors import StackError
from dicomflow.settings import StackSettings
from dicomflow.stack._proc import ensure_port_free, kill_pid, pid_alive, read_pid, stop_pid, wait_port

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


class KafkaBroker:
    """Install (jars), format, start, stop and report one local broker."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.home = settings.dir.resolve() / "kafka"
        self.jars = settings.dir.resolve() / "cache" / f"kafka-{settings.kafka_version}"
        self.data = self.home / "data"
        self.pid_file = self.home / "kafka.pid"
        self.log_file = self.home / "server.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_port}"

    # ------------------------------------------------------------------ install

    def install(self) -> Path:
        """Resolve the broker's jars with Maven into the cache folder (once).

        Raises:
            StackError: Java or Maven missing, or Maven could not resolve the artifact.
        """
        marker = self.jars / ".complete"
        if marker.exists():
            return self.jars
        for tool in ("java", "mvn"):
            if shutil.which(tool) is None:
                raise StackError(f"`{tool}` is not on PATH; Kafka needs Java 17+ and Maven to fetch its jars")
        self.jars.mkdir(parents=True, exist_ok=True)
        log.info("resolving org.apache.kafka:kafka_2.13:%s from Maven Central", self.settings.kafka_version)
        with tempfile.TemporaryDirectory(prefix="dicomflow-kafka-pom-") as tmp:
            pom = Path(tmp) / "pom.xml"
            pom.write_text(_POM.format(version=self.settings.kafka_version, log4j=_LOG4J_VERSION))
            cmd = [
                "mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                f"-DoutputDirectory={self.jars}", "-DincludeScope=runtime",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise StackError(
                f"Maven could not resolve Kafka {self.settings.kafka_version}: "
                f"{(proc.stdout + proc.stderr).strip()[-2000:]}"
            )
        if not list(self.jars.glob("kafka_2.13-*.jar")):
            raise StackError(f"Maven finished but no kafka_2.13 jar is in {self.jars}")
        marker.write_text(self.settings.kafka_version + "\n")
        return self.jars

    # ------------------------------------------------------------------ config

    def _write_config(self) -> Path:
        s = self.settings
        self.home.mkdir(parents=True, exist_ok=True)
        props = self.home / "server.properties"
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data}",
                    "num.partitions=1",
                    "auto.create.topics.enable=true",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=4",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "num.network.threads=2",
                    "num.io.threads=4",
                    "log.retention.hours=168",
                    "",
                ]
            )
        )
        (self.home / "log4j2.yaml").write_text(_LOG4J2.format(log=self.log_file))
        return props

    def _java(self, main: str, *args: str) -> list[str]:
        return ["java", "-cp", f"{self.jars}/*", main, *args]

    def _format(self, props: Path) -> None:
        """Format the KRaft storage on first start (meta.properties marks it done)."""
        if (self.data / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        proc = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
            capture_output=True, text=True, check=False,
            env={**os.environ, "KAFKA_LOG4J_OPTS": ""},
        )
        if proc.returncode != 0:
            raise StackError(f"formatting Kafka storage in {self.data} failed: {(proc.stdout + proc.stderr).strip()[-1500:]}")

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

    def start(self, timeout_s: float = 90.0) -> int:
        """Start the broker if it is not running; return its PID once it serves requests."""
        running = self.pid()
        if running:
            self.wait_ready(timeout_s)
            return running
        self.install()
        ensure_port_free(self.settings.kafka_port, "Kafka broker")
        ensure_port_free(self.settings.kafka_controller_port, "Kafka controller")
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
        log.info("Kafka broker starting, PID %s, %s", proc.pid, self.bootstrap)
        try:
            wait_port(self.settings.kafka_port, timeout_s, proc.pid, "Kafka broker")
            self.wait_ready(timeout_s)
        except StackError as exc:
            raise StackError(f"{exc}; see {self.log_file} and {self.home / 'stdout.log'}") from exc
        return proc.pid

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Return once a produce (acks=all) and a consume of the same record succeed."""
        from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

        deadline = time.monotonic() + timeout_s
        topic = "__dicomflow_probe"
        token = uuid.uuid4().hex.encode()
        last_error = "no answer"
        while time.monotonic() < deadline:
            try:
                producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all",
                                     "message.timeout.ms": 10000, "log_level": 0})
                errors: list[str] = []
                offsets: list[tuple[int, int]] = []

                def on_delivery(err: object, msg: object) -> None:
                    if err is not None:
                        errors.append(str(err))  # noqa: B023 - called during this iteration's flush
                    else:
                        offsets.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]  # noqa: B023 - ditto

                producer.produce(topic, token, on_delivery=on_delivery)
                producer.flush(15)
                if errors or not offsets:
                    last_error = errors[0] if errors else "produce not acknowledged"
                    time.sleep(0.5)
                    continue
                partition, offset = offsets[0]
                consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "__dicomflow_probe",
                                     "enable.auto.commit": False, "log_level": 0})
                try:
                    consumer.assign([TopicPartition(topic, partition, offset)])
                    end = time.monotonic() + 15
                    while time.monotonic() < end:
                        msg = consumer.poll(0.5)
                        if msg is not None and msg.error() is None and msg.value() == token:
                            return
                finally:
                    consumer.close()
                last_error = "produced record not read back"
            except KafkaException as exc:
                last_error = str(exc)
                time.sleep(0.5)
        raise StackError(f"Kafka at {self.bootstrap} did not serve a produce and a consume within {timeout_s:.0f} s: {last_error}")

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
        return KafkaStatus(running=pid is not None, pid=pid, bootstrap=self.bootstrap, log_file=self.log_file)
