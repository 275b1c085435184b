"""Authentication and TLS failures, told apart from a broker that is merely down.

librdkafka treats a refused password or an untrusted broker certificate like
any connection failure: it reconnects forever, and a producer's messages wait
until ``message.timeout.ms``, an admin call until its timeout. That looks like
a hang. The failure does reach the client's error callback at once
(``_AUTHENTICATION``, ``_SSL``, or ``_TRANSPORT`` with the TLS verdict in its
text), naming the broker. :class:`AuthWatch` is that callback for every
dicomflow client: it remembers the failure, and the wrapper turns it into a
:class:`~dicomflow.kafka.exceptions.KafkaAuthError` within a second or so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError

from dicomflow.kafka.exceptions import KafkaAuthError

log = logging.getLogger(__name__)

#: Seconds a seen failure stays current (librdkafka retries the connection at most every 10 s).
STICKY_S = 60.0
#: What librdkafka says when a TLS handshake fails on the certificate (reported as _TRANSPORT too).
_TLS_WORDS = ("certificate verify failed", "SSL handshake failed", "sslv3 alert", "unknown ca")


def auth_failure(err: KafkaError) -> bool:
    """True when ``err`` is a refused credential or certificate, not a broker that is down."""
    code = err.code()
    if code in (KafkaError._AUTHENTICATION, KafkaError._SSL):
        return True
    text = err.str()
    return code == KafkaError._TRANSPORT and any(w.lower() in text.lower() for w in _TLS_WORDS)


class AuthWatch:
    """An ``error_cb`` that remembers the last authentication / TLS failure of one client.

    ``then`` (optional) is called with every error afterwards, so a wrapper
    keeps its own handling. Never raises: it runs inside librdkafka.
    """

    def __init__(self, brokers: str, client: str, then: Callable[[KafkaError], None] | None = None,
                 on_failure: Callable[[KafkaAuthError], None] | None = None) -> None:
        self.brokers = brokers
        self.client = client
        self._then = then
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._failure: KafkaAuthError | None = None
        self._seen_at = 0.0
        self._logged = False

    def __call__(self, err: KafkaError) -> None:
        try:
            if auth_failure(err):
                failure = KafkaAuthError(self.brokers, err.str(), client=self.client)
                with self._lock:
                    self._failure, self._seen_at = failure, time.monotonic()
                    first = not self._logged
                    self._logged = True
                if first:
                    log.error("%s", failure)
                if self._on_failure is not None:
                    self._on_failure(failure)
            if self._then is not None:
                self._then(err)
        except Exception:  # an exception must not unwind through librdkafka
            log.exception("handling a Kafka client error failed")

    @property
    def failure(self) -> KafkaAuthError | None:
        """The last failure if it is still current (seen within :data:`STICKY_S`)."""
        with self._lock:
            if self._failure is not None and time.monotonic() - self._seen_at <= STICKY_S:
                return self._failure
            return None

    def check(self) -> None:
        """Raise the current failure, if any.

        Raises:
            KafkaAuthError: the broker refused the credentials or the certificate was not trusted.
        """
        failure = self.failure
        if failure is not None:
            raise failure


__all__ = ["STICKY_S", "AuthWatch", "auth_failure"]
