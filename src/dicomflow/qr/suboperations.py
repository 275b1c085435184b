"""The C-STORE sub-operations of one retrieve, as the (status, data set) pairs pynetdicom's handlers yield.

pynetdicom sends each yielded data set with a C-STORE request, counts the
response (remaining / completed / failed / warning in the pending C-MOVE or
C-GET responses) and names the failed SOP Instance UIDs in the final
response's Failed SOP Instance UID List. An instance that cannot be sent at
all (object missing, no syntax the peer accepted) is yielded as a bare data
set with only its UIDs and no File Meta: pynetdicom refuses to encode it
before anything goes on the wire, so it is counted and named as a failed
sub-operation like a refused C-STORE. A C-CANCEL is checked before every
sub-operation; the answer is then Cancel (0xFE00) with the counts so far.

An instance sent in its stored syntax is not decoded at all: it is yielded
as a :class:`StoredFile` (its UIDs and the local file), and the association's
``send_c_store`` is wrapped (:func:`send_files_as_stored`) to hand pynetdicom
the file's path instead, which pynetdicom streams from disk in chunks
(``STORE_SEND_CHUNKED_DATASET``): the destination gets the stored bytes
exactly, and memory holds no more than a PDU of it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.association import Association

from dicomflow.qr.retrieve import InstanceUnavailable, Retriever, StoredFile, Transfer
from dicomflow.store.retrieval import RetrieveItem

log = logging.getLogger(__name__)

PENDING = 0xFF00
CANCEL = 0xFE00


def status(code: int, comment: str) -> Dataset:
    """A response status with its Error Comment (at most 64 characters, as the VR allows)."""
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


def send_files_as_stored(assoc: Association) -> Callable[[], None]:
    """Wrap ``assoc.send_c_store`` so a :class:`StoredFile` goes by path (see the module doc); return the undo."""
    original = assoc.send_c_store

    def send(dataset: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(dataset, StoredFile):
            try:
                return original(dataset.local_path, *args, **kwargs)
            finally:
                dataset.cleanup()
        return original(dataset, *args, **kwargs)

    assoc.send_c_store = send  # type: ignore[method-assign]

    def undo() -> None:
        with contextlib.suppress(AttributeError):
            del assoc.send_c_store

    return undo


def unsendable(item: RetrieveItem) -> Dataset:
    """A data set pynetdicom counts as a failed sub-operation without sending it (see the module doc)."""
    ds = Dataset()
    ds.SOPClassUID = item.sop_class_uid
    ds.SOPInstanceUID = item.sop_uid
    return ds


def accepted_syntaxes(contexts: Iterable[object], *, as_scu_only: bool) -> dict[str, list[str]]:
    """{SOP class: transfer syntaxes} of the accepted contexts we may send C-STORE requests on."""
    out: dict[str, list[str]] = {}
    for cx in contexts:
        if as_scu_only and not getattr(cx, "as_scu", False):
            continue
        abstract = str(getattr(cx, "abstract_syntax", ""))
        for ts in getattr(cx, "transfer_syntax", []) or []:
            out.setdefault(abstract, []).append(str(ts))
    return out


def send_each(retriever: Retriever, transfer: Transfer, accepted: Mapping[str, Sequence[str]],
              is_cancelled: Callable[[], bool]) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """Yield (Pending, instance) for each instance, one read at a time; (Cancel, failed list) on C-CANCEL."""
    for item in transfer.items:
        if is_cancelled():
            transfer.cancelled = True
            failed = Dataset()
            failed.FailedSOPInstanceUIDList = list(transfer.failed)
            log.info("%s from %s cancelled after %d of %d sub-operation(s)", transfer.service,
                     transfer.parties.requestor_ae, len(transfer.completed) + len(transfer.failed), len(transfer.items))
            yield CANCEL, failed
            return
        try:
            ds = retriever.load(item, accepted.get(item.sop_class_uid, ()))
        except InstanceUnavailable as exc:
            log.warning("%s from %s: instance %s not sent: %s", transfer.service, transfer.parties.requestor_ae,
                        item.sop_uid, exc.reason)
            transfer.result(item.sop_uid, None, exc.reason)
            ds = unsendable(item)
        yield PENDING, ds


__all__ = ["CANCEL", "PENDING", "accepted_syntaxes", "send_each", "send_files_as_stored", "status", "unsendable"]
