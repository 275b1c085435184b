"""The error hierarchy: one root, one subclass per stage.

Every error carries the context a reader needs to find the culprit (a config
key and file, a Kafka ``topic[partition]@offset``, a file path, a SOP Instance
UID) and keeps the original exception as ``__cause__``.

Whether a failure is *poison* (the input itself is bad: replaying it can never
succeed, so it goes to the dead-letter topic) or *transient* (the world is
broken for a while: retry, commit nothing past it) is a property of the error
type, decided here and nowhere else: see :attr:`DicomflowError.poison`.
"""

from __future__ import annotations


class DicomflowError(Exception):
    """Root of every error dicomflow raises on purpose."""

    #: True when replaying the same input can never succeed (dead-letter it).
    poison: bool = False


class ConfigError(DicomflowError):
    """A setting is missing or invalid; names the key and where it came from."""

    def __init__(self, key: str, source: str, problem: str) -> None:
        self.key = key
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}")


class WireFormatError(DicomflowError):
    """A message payload does not match the wire format (bad JSON, wrong schema).

    ``field`` is the JSON path of the offending field (``$.trace_id``) when
    one is known.
    """

    poison = True

    def __init__(self, model: str, problem: str, field: str | None = None) -> None:
        self.model = model
        self.problem = problem
        self.field = field
        where = f" at {field}" if field else ""
        super().__init__(f"invalid {model}{where}: {problem}")


class ExtractError(DicomflowError):
    """A DICOM file cannot be turned into records: not DICOM, truncated, UID missing.

    Always poison: the same file will fail the same way again.
    """

    poison = True

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class StackError(DicomflowError):
    """The local Kafka / PostgreSQL stack could not be installed, started or stopped."""


class PublishError(DicomflowError):
    """Kafka did not acknowledge a message (broker unreachable, timeout, too large).

    Transient: the caller may retry; nothing was reported delivered.
    """


class StoreError(DicomflowError):
    """PostgreSQL rejected or could not take a batch (connection lost, deadlock).

    Transient by default; the pipeline retries with backoff.
    """


class ConsumerError(DicomflowError):
    """The Kafka consumer failed: an offset commit was refused, or the client hit an error.

    Transient (retry, commit nothing past it) unless ``fatal`` is set: a fatal
    client error means this consumer instance can never work again and the
    process should exit so that a fresh one replaces it.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        self.fatal = fatal
        super().__init__(message)


class PoisonMessageError(DicomflowError):
    """A store event that can never be processed; it goes to the dead-letter topic.

    ``error_class`` is a short stable name for the DLQ header
    (``wire-format``, ``file-missing``, ``outside-storage-root``, ``not-dicom`` ...).
    """

    poison = True

    def __init__(self, error_class: str, reason: str) -> None:
        self.error_class = error_class
        self.reason = reason
        super().__init__(f"{error_class}: {reason}")


class ReceiverError(DicomflowError):
    """The DICOM network receiver refuses an association or cannot go on with one: a peer broke
    the Upper Layer protocol or went away, a data set grew past its limit, the association limit or
    a TLS handshake refused it. (An instance that cannot be stored is an ingest error.)"""


def is_poison(exc: BaseException) -> bool:
    """Decide, in one place, whether an exception means "dead-letter this input"."""
    return isinstance(exc, DicomflowError) and exc.poison
