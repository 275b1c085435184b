"""The asyncio face of the send engine: the same queueing and accounting, awaited.

:func:`send_async` drives :meth:`SendEngine.queue <dicomflow.kafka.engine.SendEngine.queue>`
(the one loop that hands messages to librdkafka) in chunks, yielding to the
event loop between them and waiting out a full local queue with
``asyncio.sleep``; the acknowledgement resolves a future from the poll
thread through ``loop.call_soon_threadsafe``. The event loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from dicomflow.kafka.delivery import BatchResult, Segment
from dicomflow.kafka.engine import FULL_QUEUE_WAIT_S, SendEngine

log = logging.getLogger(__name__)

#: Messages produced between two yields to the event loop.
ASYNC_CHUNK = 1000


async def send_async(engine: SendEngine, segments: list[Segment], timeout_s: float | None) -> BatchResult:
    """Queue every message in chunks, yielding to the loop, then await the reports.

    Raises:
        PublisherClosedError: the engine is closed; nothing was sent.
        PublishError: the producer hit a fatal error earlier.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[BatchResult] = loop.create_future()
    tracker, started, deadline = engine.start(segments, timeout_s, _resolver(loop, future))
    for full in engine.queue(tracker, segments, deadline, chunk=ASYNC_CHUNK):
        await asyncio.sleep(FULL_QUEUE_WAIT_S if full else 0)
    with engine.waiting():
        try:
            await asyncio.wait_for(asyncio.shield(future), engine.wait_budget(deadline))
        except TimeoutError:
            tracker.abandon(engine.timeout_reason(timeout_s))
    return engine.log_outcome(tracker.result, segments, started)


def _resolver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[BatchResult]) -> Callable[[BatchResult], None]:
    """A thread-safe ``on_done`` that resolves ``future`` on its own event loop."""

    def set_result(result: BatchResult) -> None:
        if not future.done():
            future.set_result(result)

    def on_done(result: BatchResult) -> None:
        try:
            loop.call_soon_threadsafe(set_result, result)
        except RuntimeError:  # the loop is closed: nobody awaits this batch any more
            log.debug("event loop closed before a batch result arrived")

    return on_done


__all__ = ["ASYNC_CHUNK", "send_async"]
