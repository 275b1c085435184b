"""The native engine's C-STORE sub-operations: framing, preloading, streaming, transcoding, the loop and its counts.

A peer on the other end of a socket pair reads the PDUs with the Upper Layer
reader, reassembles each message and answers a C-STORE-RSP; the data sets it
gets are compared with the stored files byte for byte.
"""

from __future__ import annotations

import shutil
import socket
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.filereader import read_dataset

from dicomflow.audit.retrieve import RetrieveParties
from dicomflow.dicom.part10 import read_file_meta
from dicomflow.ingest.tenant import TenantResolver
from dicomflow.qr.retrieve import Retriever, Transfer
from dicomflow.receiver import dimse
from dicomflow.receiver import suboperations as subops
from dicomflow.receiver import upperlayer as ul
from dicomflow.settings import Settings, StorageSettings
from dicomflow.store.retrieval import RetrieveItem

DATA = Path(pydicom.__file__).parent / "data" / "test_files"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
RLE = "1.2.840.10008.1.2.5"


@dataclass
class Peer:
    """Reads C-STORE-RQs on its end of the pair, answers each with ``status`` (cancel: a C-CANCEL-RQ first)."""

    sock: socket.socket
    status: int = 0
    cancel_after: int | None = None
    received: list[tuple[dimse.Command, bytes, list[int]]] = field(default_factory=list)
    pdu_sizes: list[int] = field(default_factory=list)
    #: The message control headers of the first PDU's PDVs.
    first_pdu_kinds: list[int] = field(default_factory=list)

    def serve(self) -> None:
        parts: dict[bool, list[bytes]] = {True: [], False: []}
        command: dimse.Command | None = None
        controls: list[int] = []
        try:
            while True:
                _pdu_type, body = ul.read_pdu(self.sock, 1 << 22)
                self.pdu_sizes.append(len(body))
                if len(self.pdu_sizes) == 1:
                    self.first_pdu_kinds = [control for _c, control, _f in ul.iter_pdvs(body)]
                for context, control, fragment in ul.iter_pdvs(body):
                    is_command = bool(control & ul.COMMAND)
                    parts[is_command].append(bytes(fragment))
                    if not is_command:
                        controls.append(control)
                    if not control & ul.LAST_FRAGMENT:
                        continue
                    if is_command:
                        command = dimse.parse_command(b"".join(parts[True]))
                        parts[True] = []
                        continue
                    assert command is not None
                    self.received.append((command, b"".join(parts[False]), controls))
                    parts[False], controls = [], []
                    if self.cancel_after is not None and len(self.received) == self.cancel_after:
                        cancel = encode_cancel(1)
                        self.sock.sendall(b"".join(ul.encode_pdata(context, ul.COMMAND, cancel, 0)))
                    rsp = dimse.c_store_rsp(command.message_id, command.affected_sop_class_uid,
                                            command.affected_sop_instance_uid, self.status)
                    self.sock.sendall(b"".join(ul.encode_pdata(context, ul.COMMAND, rsp, 0)))
        except (ul.PeerClosed, OSError):
            return


def encode_cancel(message_id: int) -> bytes:
    from dicomflow.receiver.dimse import _command, _element  # the same encoder our responses use

    return _command([_element(dimse.COMMAND_FIELD, (dimse.C_CANCEL_RQ).to_bytes(2, "little")),
                     _element(dimse.MESSAGE_ID_RESPONDED_TO, message_id.to_bytes(2, "little")),
                     _element(dimse.COMMAND_DATASET_TYPE, (0x0101).to_bytes(2, "little"))])


def stored_item(root: Path, name: str, sop: str | None = None) -> RetrieveItem:
    path = root / f"{sop or 'stored'}-{name}"
    shutil.copy(DATA / name, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    return RetrieveItem("PAT", str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), sop or str(ds.SOPInstanceUID),
                        str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID), str(path))


def dataset_of(path: str) -> bytes:
    data = Path(path).read_bytes()
    return data[read_file_meta(data, 132)[1]:]


@pytest.fixture
def retriever(tmp_path: Path) -> Retriever:
    settings = Settings(storage=StorageSettings(root=tmp_path))
    return Retriever(settings, TenantResolver({}, "default"), lambda events: None)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    with left, right:
        yield left, right


def link_for(sock: socket.socket, items: list[RetrieveItem], max_pdu: int, syntaxes: list[str],
             on_other: object = None) -> subops.Link:
    contexts: dict[str, list[tuple[int, str]]] = {}
    for item in items:
        contexts[item.sop_class_uid] = [(2 * i + 1, ts) for i, ts in enumerate(syntaxes)]
    return subops.Link(sock, sock.sendall, max_pdu, contexts, 5.0, on_other=on_other)  # type: ignore[arg-type]


def transfer_of(items: list[RetrieveItem]) -> Transfer:
    parties = RetrieveParties("node", "DICOMFLOW", "GETSCU", "127.0.0.1", "GETSCU", "127.0.0.1")
    return Transfer("C-GET", "default", items, parties)


def run_with_peer(peer: Peer, body: object) -> None:
    thread = threading.Thread(target=peer.serve, daemon=True)
    thread.start()
    try:
        body()  # type: ignore[operator]
    finally:
        peer.sock.shutdown(socket.SHUT_RDWR)
        thread.join(5)


@pytest.mark.parametrize("max_pdu", [16384, 0])
def test_a_stored_instance_goes_byte_equal_in_pdus_within_the_peers_limit(
        retriever: Retriever, pair: tuple[socket.socket, socket.socket], tmp_path: Path, max_pdu: int) -> None:
    ours, theirs = pair
    item = stored_item(tmp_path, "CT_small.dcm")
    assert item.transfer_syntax_uid == EXPLICIT
    link = link_for(ours, [item], max_pdu, [IMPLICIT, EXPLICIT])
    peer = Peer(theirs)
    transfer = transfer_of([item])
    run_with_peer(peer, lambda: subops.run(retriever, transfer, link, subops.Progress(lambda c: None), lambda: False))
    [(command, data, controls)] = peer.received
    assert command.affected_sop_instance_uid == item.sop_uid and command.command_field == dimse.C_STORE_RQ
    assert data == dataset_of(item.file_path)
    assert [c & ul.LAST_FRAGMENT for c in controls] == [0] * (len(controls) - 1) + [ul.LAST_FRAGMENT]
    if max_pdu:
        assert max(peer.pdu_sizes) <= max_pdu
        assert len(peer.pdu_sizes) == -(-len(data) // (max_pdu - 6))  # the command rides in the first data PDU
    [command_pdv, data_pdv] = peer.first_pdu_kinds  # the command's PDV, then the data set's first one
    assert command_pdv == ul.COMMAND | ul.LAST_FRAGMENT and not data_pdv & ul.COMMAND
    assert bool(data_pdv & ul.LAST_FRAGMENT) == (len(peer.pdu_sizes) == 1)
    assert transfer.completed == {item.sop_uid}


def test_a_large_instance_is_streamed_byte_equal(retriever: Retriever, pair: tuple[socket.socket, socket.socket],
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subops, "PRELOAD_LIMIT", 1000)
    ours, theirs = pair
    item = stored_item(tmp_path, "CT_small.dcm")
    link = link_for(ours, [item], 4096, [EXPLICIT])
    prepared = subops.prepare(retriever, link, transfer_of([item]), 0)
    assert isinstance(prepared, subops.Prepared) and prepared.stream is not None
    prepared.cleanup()
    peer = Peer(theirs)
    transfer = transfer_of([item])
    run_with_peer(peer, lambda: subops.run(retriever, transfer, link, subops.Progress(lambda c: None), lambda: False))
    [(_command, data, controls)] = peer.received
    assert data == dataset_of(item.file_path)
    assert sum(1 for c in controls if c & ul.LAST_FRAGMENT) == 1 and controls[-1] & ul.LAST_FRAGMENT


def test_an_instance_the_peer_takes_only_uncompressed_is_transcoded(
        retriever: Retriever, pair: tuple[socket.socket, socket.socket], tmp_path: Path) -> None:
    ours, theirs = pair
    item = stored_item(tmp_path, "MR_small_RLE.dcm")
    assert item.transfer_syntax_uid == RLE
    link = link_for(ours, [item], 16384, [EXPLICIT])
    peer = Peer(theirs)
    run_with_peer(peer, lambda: subops.run(retriever, transfer_of([item]), link, subops.Progress(lambda c: None),
                                           lambda: False))
    [(_command, data, _controls)] = peer.received
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sent = read_dataset(BytesIO(data), False, True)
        original = pydicom.dcmread(DATA / "MR_small_RLE.dcm")
        sent.file_meta = pydicom.dataset.FileMetaDataset()
        sent.file_meta.TransferSyntaxUID = EXPLICIT
        assert str(sent.SOPInstanceUID) == item.sop_uid
        assert (sent.pixel_array == original.pixel_array).all()


def test_missing_files_fail_refusals_warn_and_pending_responses_are_throttled(
        retriever: Retriever, pair: tuple[socket.socket, socket.socket], tmp_path: Path) -> None:
    ours, theirs = pair
    items = [stored_item(tmp_path, "CT_small.dcm", sop=f"1.2.3.{i}") for i in range(5)]
    Path(items[2].file_path).unlink()
    pending: list[dimse.Counts] = []
    transfer = transfer_of(items)
    peer = Peer(theirs, status=0xB007)
    link = link_for(ours, items, 16384, [EXPLICIT])
    run_with_peer(peer, lambda: subops.run(retriever, transfer, link, subops.Progress(pending.append), lambda: False))
    assert len(peer.received) == 4
    sent = {c.affected_sop_instance_uid: data for c, data, _controls in peer.received}
    assert all(sent[i.sop_uid] == dataset_of(i.file_path) for i in items if i.sop_uid != "1.2.3.2")  # buffer reused
    assert set(transfer.failed) == {"1.2.3.2"} and "missing" in transfer.failed["1.2.3.2"]
    assert transfer.warned == {"1.2.3.0", "1.2.3.1", "1.2.3.3", "1.2.3.4"}
    assert pending[0] == dimse.Counts(completed=0, failed=0, warning=1, remaining=4)
    assert len(pending) < len(items) - 1  # not one per instance: at most one per PENDING_INTERVAL_S


def test_a_c_cancel_read_with_the_responses_stops_the_sub_operations(
        retriever: Retriever, pair: tuple[socket.socket, socket.socket], tmp_path: Path) -> None:
    ours, theirs = pair
    items = [stored_item(tmp_path, "CT_small.dcm", sop=f"1.2.3.{i}") for i in range(6)]
    seen: list[dimse.Command] = []
    link = link_for(ours, items, 16384, [EXPLICIT], on_other=seen.append)
    transfer = transfer_of(items)
    peer = Peer(theirs, cancel_after=2)
    run_with_peer(peer, lambda: subops.run(retriever, transfer, link, subops.Progress(lambda c: None),
                                           lambda: bool(seen)))
    assert [c.command_field for c in seen] == [dimse.C_CANCEL_RQ] and seen[0].message_id_responded_to == 1
    assert transfer.cancelled and len(transfer.completed) == 2 and len(peer.received) == 2


def test_an_unexpected_command_while_awaiting_a_response_is_a_protocol_error(
        pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    link = subops.Link(ours, ours.sendall, 0, {}, 5.0)
    theirs.sendall(b"".join(ul.encode_pdata(1, ul.COMMAND, encode_cancel(1), 0)))
    with pytest.raises(ul.ProtocolError, match="C-STORE-RSP"):
        link.await_store_rsp(1)


def test_framed_size_counts_a_header_per_pdu() -> None:
    assert subops.framed_size(100, 50) == 100 + 2 * 12
    assert subops.framed_size(101, 50) == 101 + 3 * 12
    assert subops.framed_size(0, 50) == 12
