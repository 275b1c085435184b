"""The stop of the long-running commands: one event, set by SIGTERM and SIGINT and by nothing else.

The consumer loops (``consume``, ``warehouse run``, ``images``) take the
event and see it within one poll (:data:`dicomflow.kafka.retry.POLL_MAX_S`),
also in the middle of a backoff; the handlers do nothing but set it, so a
signal can never interrupt the loop in the middle of its own work.
"""

from __future__ import annotations

import signal
import threading


def stop_on_signals() -> threading.Event:
    """A new stop event, set by the next SIGTERM or SIGINT of this process."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


__all__ = ["stop_on_signals"]
