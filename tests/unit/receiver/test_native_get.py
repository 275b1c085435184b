"""A C-GET through the native acceptor end to end over a socket pair: negotiation with roles, sub-operations, responses.

The requestor's side is written with pynetdicom's PDU encoder and pydicom; the
index lookup is the one part replaced (it needs PostgreSQL, which the
integration tests in tests/integration/qr use): the retriever's ``start``
reads the identifier's keys for real and matches them against files in a
temporary storage root.
"""

from __future__ import annotations

import shutil
import socket
import struct
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

from dicomflow.audit.retrieve import RetrieveParties
from dicomflow.ingest.tenant import TenantResolver
from dicomflow.ingest.transfer_log import Peer, SessionKey
from dicomflow.models import AuditEvent
from dicomflow.qr.results import encode_identifier
from dicomflow.qr.retrieve import Retriever, Transfer
from dicomflow.qr.retrieve_keys import Model, retrieve_of
from dicomflow.receiver import dimse
from dicomflow.receiver import upperlayer as ul
from dicomflow.receiver.acceptor import Association
from dicomflow.receiver.identity import IdentityPolicy
from dicomflow.receiver.limits import SlotLimiter
from dicomflow.receiver.negotiation import Negotiation
from dicomflow.settings import DEFAULT_SUPPORTED_TS, ReceiverSettings, Settings, StorageSettings
from dicomflow.store.retrieval import RetrieveItem
from tests.unit.receiver.test_retrieve_pdus import STUDY_GET, _with_roles
from tests.unit.receiver.test_suboperations import encode_cancel
from tests.unit.receiver.test_upperlayer import EXPLICIT, IMPLICIT, encode_implicit, pynetdicom_rq

CT_FILE = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY = "1.2.3.4.5"


class Indexed(Retriever):
    """A retriever whose index is a list (see the module doc); everything else is the real one."""

    def __init__(self, root: Path, items: list[RetrieveItem]) -> None:
        self.audit: list[AuditEvent] = []
        super().__init__(Settings(storage=StorageSettings(root=root)), TenantResolver({}, "default"), self.audit.extend)
        self.items = items

    def start(self, service: str, identifier: Dataset, model: Model, parties: RetrieveParties) -> Transfer:
        wanted = retrieve_of(identifier, model)
        return Transfer(service, "default", [i for i in self.items if i.study_uid in wanted.keys.study_uids], parties)


class Events:
    def established(self, session: SessionKey, peer: Peer) -> None: ...

    def closed(self, session: SessionKey, peer: Peer | None) -> None: ...

    def rejected(self, peer: Peer, reason: str, kind: str = "other") -> None: ...

    def aborted(self, session: SessionKey, kind: str) -> None: ...

    def tls_refused(self, peer_address: str, reason: str, kind: str) -> None: ...


@dataclass
class Host:
    """The engine's side an association needs (receiver/native.py's NativeEngine, without listeners)."""

    limiter: SlotLimiter
    retriever: Retriever
    receiver: ReceiverSettings = field(default_factory=lambda: ReceiverSettings(idle_timeout_s=10))
    events: Events = field(default_factory=Events)
    service: Any = None  # C-STOREs are not sent here
    tls: Any = None
    finder: Any = None

    def __post_init__(self) -> None:
        self.negotiation = Negotiation(self.receiver, DEFAULT_SUPPORTED_TS, retrieve=True)
        self.identity = IdentityPolicy(self.receiver)

    def forget(self, association: Association) -> None: ...


@dataclass
class Outcome:
    stored: dict[str, bytes] = field(default_factory=dict)
    responses: list[Dataset] = field(default_factory=list)
    identifiers: list[Dataset | None] = field(default_factory=list)


def _messages(sock: socket.socket) -> Iterator[tuple[int, Dataset, bytes | None]]:
    """(context id, command, data set bytes or None) of each message the acceptor sends."""
    parts: dict[bool, list[bytes]] = {True: [], False: []}
    command: Dataset | None = None
    while True:
        pdu_type, body = ul.read_pdu(sock, 1 << 22, deadline=None)
        assert pdu_type == ul.P_DATA_TF, pdu_type
        for context, control, fragment in ul.iter_pdvs(body):
            is_command = bool(control & ul.COMMAND)
            parts[is_command].append(bytes(fragment))
            if not control & ul.LAST_FRAGMENT:
                continue
            data = b"".join(parts[is_command])
            parts[is_command] = []
            if is_command:
                command = read_dataset(BytesIO(data), True, True)
                if command.CommandDataSetType == 0x0101:
                    yield context, command, None
            else:
                assert command is not None
                yield context, command, data


def _get_rq() -> bytes:
    return encode_implicit([
        (dimse.AFFECTED_SOP_CLASS_UID, STUDY_GET.encode() + b"\x00"),
        (dimse.COMMAND_FIELD, struct.pack("<H", dimse.C_GET_RQ)),
        (dimse.MESSAGE_ID, struct.pack("<H", 1)),
        (dimse.PRIORITY, struct.pack("<H", 0)),
        (dimse.COMMAND_DATASET_TYPE, struct.pack("<H", 0)),
    ])


def run_get(tmp_path: Path, items: list[RetrieveItem], *, roles: bool = True, cancel_after: int | None = None,
            status: int = 0) -> tuple[Outcome, Indexed]:
    retriever = Indexed(tmp_path, items)
    with socket.create_server(("127.0.0.1", 0)) as listener:  # a loopback pair with addresses (the peer's audit)
        theirs = socket.create_connection(listener.getsockname()[:2])
        ours, _ = listener.accept()
    host = Host(SlotLimiter(tmp_path / "slots", 4), retriever)
    association = Association(host, ours, ("127.0.0.1", 1))  # type: ignore[arg-type]
    thread = threading.Thread(target=association.run, daemon=True)
    thread.start()
    outcome = Outcome()
    with theirs:
        rq = pynetdicom_rq((STUDY_GET, [EXPLICIT]), (CT, [EXPLICIT, IMPLICIT]), calling="GETSCU")
        theirs.sendall(_with_roles(rq, [(CT, False, True)]) if roles else rq)
        assert ul.read_pdu(theirs, 1 << 20)[0] == ul.A_ASSOCIATE_AC
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = STUDY
        theirs.sendall(b"".join(ul.encode_pdata(1, ul.COMMAND, _get_rq(), 0)
                                + ul.encode_pdata(1, 0, encode_identifier(identifier, EXPLICIT), 0)))
        final: Dataset | None = None
        for context, command, data in _messages(theirs):
            if command.CommandField == dimse.C_STORE_RQ:
                assert data is not None and context == 3
                outcome.stored[str(command.AffectedSOPInstanceUID)] = data
                if cancel_after is not None and len(outcome.stored) == cancel_after:
                    theirs.sendall(b"".join(ul.encode_pdata(1, ul.COMMAND, encode_cancel(1), 0)))
                rsp = dimse.c_store_rsp(command.MessageID, CT, str(command.AffectedSOPInstanceUID), status)
                theirs.sendall(b"".join(ul.encode_pdata(context, ul.COMMAND, rsp, 0)))
                continue
            assert command.CommandField == dimse.C_GET_RSP and command.MessageIDBeingRespondedTo == 1
            outcome.responses.append(command)
            outcome.identifiers.append(read_dataset(BytesIO(data), False, True) if data else None)
            if command.Status != 0xFF00:
                final = command
                break
        assert final is not None
        theirs.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
        assert ul.read_pdu(theirs, 1 << 20)[0] == ul.A_RELEASE_RP
    thread.join(5)
    return outcome, retriever


def items_in(root: Path, count: int) -> list[RetrieveItem]:
    out = []
    for i in range(count):
        path = root / f"{i}.dcm"
        shutil.copy(CT_FILE, path)
        out.append(RetrieveItem("PAT", STUDY, "1.2.3.4.5.6", f"{STUDY}.9.{i}", CT, EXPLICIT, str(path)))
    return out


def stored_dataset(path: str) -> bytes:
    from dicomflow.dicom.part10 import read_file_meta

    data = Path(path).read_bytes()
    return data[read_file_meta(data, 132)[1]:]


def test_a_c_get_sends_every_instance_on_the_granted_role_and_ends_with_success(tmp_path: Path) -> None:
    items = items_in(tmp_path, 4)
    outcome, retriever = run_get(tmp_path, items)
    assert outcome.stored == {i.sop_uid: stored_dataset(i.file_path) for i in items}
    final = outcome.responses[-1]
    assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 4, 0)
    assert "NumberOfRemainingSuboperations" not in final and outcome.identifiers[-1] is None
    assert outcome.responses[0].Status == 0xFF00 and outcome.responses[0].NumberOfRemainingSuboperations == 3
    assert [e.event_id.code for e in retriever.audit] == ["110102", "110104"]


def test_a_missing_object_is_a_failed_sub_operation_named_in_the_final_response(tmp_path: Path) -> None:
    items = items_in(tmp_path, 3)
    Path(items[1].file_path).unlink()
    outcome, retriever = run_get(tmp_path, items)
    final = outcome.responses[-1]
    assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0xB000, 2, 1)
    failed = outcome.identifiers[-1]
    assert failed is not None and failed.FailedSOPInstanceUIDList == items[1].sop_uid
    transferred = retriever.audit[-1]
    assert transferred.event_outcome != 0
    assert items[1].sop_uid in transferred.participant_objects[0].details["failed_sop_instance_uids"]


def test_a_c_cancel_between_sub_operations_ends_with_cancel_and_the_remaining_count(tmp_path: Path) -> None:
    items = items_in(tmp_path, 6)
    outcome, _retriever = run_get(tmp_path, items, cancel_after=2)
    final = outcome.responses[-1]
    assert len(outcome.stored) == 2
    assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfRemainingSuboperations) == (
        0xFE00, 2, 4)


@pytest.mark.parametrize(("roles", "status", "expected"), [(False, 0, 0xA702), (True, 0xA700, 0xA702),
                                                           (True, 0xB000, 0xB000)])
def test_without_the_scp_role_or_with_refusals_every_sub_operation_fails(
        tmp_path: Path, roles: bool, status: int, expected: int) -> None:
    items = items_in(tmp_path, 2)
    outcome, _retriever = run_get(tmp_path, items, roles=roles, status=status)
    final = outcome.responses[-1]
    assert final.Status == expected
    if expected == 0xA702:
        assert final.NumberOfFailedSuboperations == 2 and final.NumberOfCompletedSuboperations == 0
    else:
        assert final.NumberOfWarningSuboperations == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (not roles) == (outcome.stored == {})
