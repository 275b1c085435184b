"""The pynetdicom engine's C-FIND handler lets pynetdicom's DUL thread drain its queue, so a C-CANCEL gets read."""

from __future__ import annotations

import queue
import threading
import time
from types import SimpleNamespace
from typing import Any

from dicomflow.receiver import pynetdicom_find


def _event(outgoing: queue.Queue[int]) -> Any:
    return SimpleNamespace(assoc=SimpleNamespace(dul=SimpleNamespace(to_provider_queue=outgoing), is_established=True))


def test_a_short_queue_does_not_wait() -> None:
    outgoing: queue.Queue[int] = queue.Queue()
    for item in range(pynetdicom_find._QUEUED_HIGH - 1):
        outgoing.put(item)
    started = time.monotonic()
    pynetdicom_find._let_the_dul_read(_event(outgoing))
    assert time.monotonic() - started < 0.05 and outgoing.qsize() == pynetdicom_find._QUEUED_HIGH - 1


def test_a_full_queue_is_waited_for_until_it_is_empty() -> None:
    outgoing: queue.Queue[int] = queue.Queue()
    for item in range(pynetdicom_find._QUEUED_HIGH):
        outgoing.put(item)
    left_when_sent: list[int] = []

    def send() -> None:  # the DUL thread: one PDU every millisecond
        while not outgoing.empty():
            time.sleep(0.001)
            outgoing.get()
            left_when_sent.append(outgoing.qsize())

    sender = threading.Thread(target=send)
    sender.start()
    pynetdicom_find._let_the_dul_read(_event(outgoing))
    assert outgoing.qsize() == 0 and len(left_when_sent) == pynetdicom_find._QUEUED_HIGH
    sender.join()


def test_a_closed_association_ends_the_wait() -> None:
    outgoing: queue.Queue[int] = queue.Queue()
    for item in range(pynetdicom_find._QUEUED_HIGH):
        outgoing.put(item)
    event = _event(outgoing)
    event.assoc.is_established = False
    pynetdicom_find._let_the_dul_read(event)
    assert outgoing.qsize() == pynetdicom_find._QUEUED_HIGH
