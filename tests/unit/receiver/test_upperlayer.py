"""The native engine's PDUs and command sets, checked against pynetdicom's and pydicom's codecs."""

from __future__ import annotations

import socket
import struct
import threading
import warnings
from io import BytesIO

import pytest
from pydicom.filereader import read_dataset
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context
from pynetdicom.transport import AddressInformation

from dicomflow.receiver import dimse
from dicomflow.receiver import upperlayer as ul
from dicomflow.receiver.negotiation import Negotiation
from dicomflow.settings import DEFAULT_SUPPORTED_TS, ReceiverSettings

CT = "1.2.840.10008.5.1.4.1.1.2"
FIND = "1.2.840.10008.5.1.4.1.2.1.1"
#: Modality Worklist FIND: a service the receiver does not offer.
WORKLIST = "1.2.840.10008.5.1.4.31"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
JPEG = "1.2.840.10008.1.2.4.50"


def pynetdicom_rq(*contexts: tuple[str, list[str]], calling: str = "CALLER", max_length: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ PDU as pynetdicom encodes it."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = ul.APPLICATION_CONTEXT
    primitive.calling_ae_title = calling
    primitive.called_ae_title = "DICOMFLOW"
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 1)
    primitive.called_presentation_address = AddressInformation("127.0.0.1", 2)
    definitions = []
    for index, (abstract, syntaxes) in enumerate(contexts):
        cx = build_context(abstract, syntaxes)
        cx.context_id = 2 * index + 1
        definitions.append(cx)
    primitive.presentation_context_definition_list = definitions
    length = MaximumLengthNotification()
    length.maximum_length_received = max_length
    uid = ImplementationClassUIDNotification()
    uid.implementation_class_uid = "1.2.3.4"
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = "TESTER_1"
    primitive.user_information = [length, uid, version]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def test_an_associate_rq_from_pynetdicom_is_read() -> None:
    data = pynetdicom_rq((CT, [JPEG, EXPLICIT]), (FIND, [IMPLICIT]), max_length=32768)
    assert data[0] == ul.A_ASSOCIATE_RQ
    request = ul.parse_associate_rq(data[6:])
    assert (request.calling_ae, request.called_ae) == ("CALLER", "DICOMFLOW")
    assert request.protocol_version == 1
    assert request.application_context == ul.APPLICATION_CONTEXT
    assert request.contexts == [ul.ProposedContext(1, CT, (JPEG, EXPLICIT)), ul.ProposedContext(3, FIND, (IMPLICIT,))]
    assert request.max_pdu_length == 32768
    assert (request.implementation_class_uid, request.implementation_version) == ("1.2.3.4", "TESTER_1")


def test_negotiation_keeps_the_senders_first_syntax_and_rejects_other_services() -> None:
    request = ul.parse_associate_rq(pynetdicom_rq((CT, [JPEG, EXPLICIT]), (WORKLIST, [IMPLICIT]), (CT, ["1.2.3.999"]))[6:])
    results, accepted = Negotiation(ReceiverSettings(), DEFAULT_SUPPORTED_TS).contexts(request)
    assert [(r.context_id, r.result) for r in results] == [
        (1, ul.ACCEPTANCE), (3, ul.ABSTRACT_SYNTAX_NOT_SUPPORTED), (5, ul.TRANSFER_SYNTAXES_NOT_SUPPORTED)]
    assert accepted == {1: (CT, JPEG)}


def test_query_retrieve_find_is_accepted_uncompressed_only() -> None:
    """C-FIND contexts (Patient / Study Root) take the first uncompressed syntax proposed; a compressed one alone is refused."""
    study_root = "1.2.840.10008.5.1.4.1.2.2.1"
    request = ul.parse_associate_rq(pynetdicom_rq((FIND, [JPEG, EXPLICIT, IMPLICIT]), (study_root, [JPEG]))[6:])
    results, accepted = Negotiation(ReceiverSettings(), DEFAULT_SUPPORTED_TS).contexts(request)
    assert [(r.context_id, r.result) for r in results] == [(1, ul.ACCEPTANCE), (3, ul.TRANSFER_SYNTAXES_NOT_SUPPORTED)]
    assert accepted == {1: (FIND, EXPLICIT)}


def test_refusals() -> None:
    request = ul.parse_associate_rq(pynetdicom_rq((CT, [EXPLICIT]))[6:])
    refusal = Negotiation(ReceiverSettings(allowed_calling_aes=("GOOD",)), DEFAULT_SUPPORTED_TS).refusal(request)
    assert refusal is not None and refusal[0] == ul.REJECT_CALLING_AE
    assert Negotiation(ReceiverSettings(allowed_calling_aes=("CALLER",)), DEFAULT_SUPPORTED_TS).refusal(request) is None


def test_a_proposed_syntax_with_non_ascii_bytes_is_answered_not_raised() -> None:
    """Regression (protocol fuzzing): a transfer syntax with bytes >= 0x80 made encoding the
    A-ASSOCIATE-AC raise UnicodeEncodeError; the peer got an abort and the log a traceback."""
    raw = pynetdicom_rq((CT, ["1.2.840.10008.1.2.9876"]))
    raw = raw.replace(b"1.2.840.10008.1.2.9876", b"1.2.840.10008.1.2.\xe9\xff\x80\x99")
    request = ul.parse_associate_rq(raw[6:])
    results, accepted = Negotiation(ReceiverSettings(), DEFAULT_SUPPORTED_TS).contexts(request)
    assert accepted == {} and results[0].result == ul.TRANSFER_SYNTAXES_NOT_SUPPORTED
    data = ul.encode_associate_ac(request, results, max_pdu_length=1 << 20,
                                  implementation_class_uid="2.25.1", implementation_version="DICOMFLOW_01")
    assert b"1.2.840.10008.1.2.????" in data  # the rejected context's syntax, made ASCII
    pdu = A_ASSOCIATE_AC()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the (echoed) invalid UID
        pdu.decode(data)
    assert [cx.result for cx in pdu.presentation_context] == [ul.TRANSFER_SYNTAXES_NOT_SUPPORTED]


def test_our_associate_ac_is_read_by_pynetdicom() -> None:
    request = ul.parse_associate_rq(pynetdicom_rq((CT, [JPEG, EXPLICIT]), (WORKLIST, [IMPLICIT]))[6:])
    results, _ = Negotiation(ReceiverSettings(), DEFAULT_SUPPORTED_TS).contexts(request)
    data = ul.encode_associate_ac(request, results, max_pdu_length=1 << 20,
                                  implementation_class_uid="2.25.1", implementation_version="DICOMFLOW_01")
    pdu = A_ASSOCIATE_AC()
    pdu.decode(data)
    primitive = pdu.to_primitive()
    assert primitive.called_ae_title == "DICOMFLOW" and primitive.calling_ae_title == "CALLER"
    assert primitive.maximum_length_received == 1 << 20
    assert primitive.implementation_class_uid == "2.25.1"
    contexts = {cx.context_id: cx for cx in primitive.presentation_context_definition_results_list}
    assert contexts[1].result == 0 and contexts[1].transfer_syntax == [JPEG]
    assert contexts[3].result == ul.ABSTRACT_SYNTAX_NOT_SUPPORTED


@pytest.mark.parametrize("body", [b"\x00" * 10, b"\x00\x01" + b"\x00" * 66 + b"\x20\x00\x00\x50abc"])
def test_a_malformed_associate_rq_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ul.ProtocolError):
        ul.parse_associate_rq(body)


def test_pdata_round_trip_and_fragmentation() -> None:
    data = bytes(range(256)) * 40
    pdus = ul.encode_pdata(7, 0, data, max_pdu_length=1000)
    assert len(pdus) == len(data) // 994 + 1
    assert all(len(p) - 6 <= 1000 for p in pdus)
    pieces = []
    for index, pdu in enumerate(pdus):
        pdu_type, length = struct.unpack(">BxI", pdu[:6])
        assert pdu_type == ul.P_DATA_TF and length == len(pdu) - 6
        [(context, control, fragment)] = list(ul.iter_pdvs(pdu[6:]))
        assert context == 7
        assert bool(control & ul.LAST_FRAGMENT) == (index == len(pdus) - 1)
        assert not control & ul.COMMAND
        pieces.append(bytes(fragment))
    assert b"".join(pieces) == data
    [single] = ul.encode_pdata(1, ul.COMMAND, b"abc", max_pdu_length=0)
    assert list((c, m, bytes(f)) for c, m, f in ul.iter_pdvs(single[6:])) == [(1, ul.COMMAND | ul.LAST_FRAGMENT, b"abc")]


def test_a_truncated_pdv_is_a_protocol_error() -> None:
    with pytest.raises(ul.ProtocolError):
        list(ul.iter_pdvs(struct.pack(">IBB", 100, 1, 3) + b"short"))


def exchange(payload: bytes, max_length: int = 1024) -> tuple[int, bytes]:
    left, right = socket.socketpair()

    def send_and_hang_up() -> None:
        right.sendall(payload)
        right.shutdown(socket.SHUT_WR)

    with left, right:
        sender = threading.Thread(target=send_and_hang_up)
        sender.start()
        try:
            return ul.read_pdu(left, max_length)
        finally:
            sender.join()


def test_read_pdu() -> None:
    assert exchange(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00") == (ul.A_RELEASE_RQ, b"\x00" * 4)
    with pytest.raises(ul.PeerClosed):
        exchange(b"")
    with pytest.raises(ul.ProtocolError, match="inside a PDU"):
        exchange(b"\x04\x00\x00\x00\x00\x10abc")
    with pytest.raises(ul.ProtocolError, match="exceeds"):
        exchange(b"\x04\x00" + struct.pack(">I", 5000), max_length=1024)


def encode_implicit(elements: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("<HHI", t >> 16, t & 0xFFFF, len(v)) + v for t, v in elements)
    return struct.pack("<HHI", 0, 0, 4) + struct.pack("<I", len(body)) + body


def test_a_c_store_rq_command_is_parsed() -> None:
    data = encode_implicit([
        (dimse.AFFECTED_SOP_CLASS_UID, CT.encode() + b"\x00"),
        (dimse.COMMAND_FIELD, struct.pack("<H", dimse.C_STORE_RQ)),
        (dimse.MESSAGE_ID, struct.pack("<H", 77)),
        (0x00000700, struct.pack("<H", 0)),
        (dimse.COMMAND_DATASET_TYPE, struct.pack("<H", 0x0000)),
        (dimse.AFFECTED_SOP_INSTANCE_UID, b"1.2.3.4\x00"),
    ])
    command = dimse.parse_command(data)
    assert command == dimse.Command(dimse.C_STORE_RQ, 77, CT, "1.2.3.4", True)
    with pytest.raises(ul.ProtocolError):
        dimse.parse_command(data[:-3])


@pytest.mark.parametrize("comment", [None, "invalid SOP Instance UID"])
def test_our_c_store_rsp_is_read_by_pydicom(comment: str | None) -> None:
    data = dimse.c_store_rsp(77, CT, "1.2.3.4", 0xC000 if comment else 0, comment)
    ds = read_dataset(BytesIO(data), True, True)
    assert ds.CommandGroupLength == len(data) - 12
    assert ds.CommandField == dimse.C_STORE_RSP
    assert ds.MessageIDBeingRespondedTo == 77
    assert ds.CommandDataSetType == 0x0101
    assert ds.AffectedSOPClassUID == CT and ds.AffectedSOPInstanceUID == "1.2.3.4"
    assert ds.Status == (0xC000 if comment else 0)
    assert ds.get("ErrorComment") == comment
    assert list(ds.keys()) == sorted(ds.keys())


def test_our_c_echo_rsp_is_read_by_pydicom() -> None:
    ds = read_dataset(BytesIO(dimse.c_echo_rsp(5, "1.2.840.10008.1.1")), True, True)
    assert (ds.CommandField, ds.MessageIDBeingRespondedTo, ds.Status) == (dimse.C_ECHO_RSP, 5, 0)
