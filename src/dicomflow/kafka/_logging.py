"""Where librdkafka's own log lines go, and how they are kept from flooding.

librdkafka reports a refused connection on every reconnect attempt (several
per second while a broker is down). They are routed to the logger
``dicomflow.kafka.librdkafka`` and each kind of line (facility + level) is let
through at most once per :data:`REPEAT_INTERVAL_S`, with a count of what was
held back.
"""

from __future__ import annotations

import logging
import threading
import time

#: Seconds between two log lines of the same librdkafka facility and level.
REPEAT_INTERVAL_S = 30.0


class _RepeatFilter(logging.Filter):
    """Let one record per (facility, level) through per interval; count the others."""

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        facility = str(args[0]) if args else str(record.msg)[:40]
        key = (record.levelno, facility)
        now = time.monotonic()
        with self._lock:
            last, held = self._last.get(key, (-self.interval_s, 0))
            if now - last < self.interval_s:
                self._last[key] = (last, held + 1)
                return False
            self._last[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} (%d similar lines held back)"
            record.args = (*args, held)
        return True


librdkafka_log = logging.getLogger("dicomflow.kafka.librdkafka")
librdkafka_log.addFilter(_RepeatFilter(REPEAT_INTERVAL_S))
