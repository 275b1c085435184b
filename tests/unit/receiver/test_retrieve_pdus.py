"""The native engine's C-GET / C-MOVE pieces on the wire: role selection, the requestor's PDUs, the commands.

Checked against pynetdicom's PDU codec and pydicom's data set reader, as the C-STORE pieces are.
"""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.filereader import read_dataset
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

from dicomflow.receiver import dimse
from dicomflow.receiver import requestor as rq
from dicomflow.receiver import upperlayer as ul
from dicomflow.receiver.negotiation import Negotiation
from dicomflow.settings import DEFAULT_SUPPORTED_TS, ReceiverSettings
from tests.unit.receiver.test_upperlayer import CT, EXPLICIT, IMPLICIT, JPEG, pynetdicom_rq

STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def _with_roles(data: bytes, roles: list[tuple[str, bool, bool]]) -> bytes:
    """A pynetdicom A-ASSOCIATE-RQ with SCP/SCU Role Selection items added."""
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(data)
    primitive = pdu.to_primitive()
    for uid, scu, scp in roles:
        item = SCP_SCU_RoleSelectionNegotiation()
        item.sop_class_uid = uid
        item.scu_role = scu
        item.scp_role = scp
        primitive.user_information.append(item)
    out = A_ASSOCIATE_RQ()
    out.from_primitive(primitive)
    return bytes(out.encode())


def test_role_selection_is_read_and_granted_as_proposed_for_storage_classes() -> None:
    data = _with_roles(pynetdicom_rq((STUDY_GET, [EXPLICIT]), (CT, [EXPLICIT, IMPLICIT]), (MR, [JPEG])),
                       [(CT, False, True), (MR, True, True), (STUDY_GET, True, True)])
    request = ul.parse_associate_rq(data[6:])
    assert request.roles == {CT: (0, 1), MR: (1, 1), STUDY_GET: (1, 1)}
    negotiation = Negotiation(ReceiverSettings(), DEFAULT_SUPPORTED_TS, retrieve=True)
    results, accepted = negotiation.contexts(request)
    assert accepted == {1: (STUDY_GET, EXPLICIT), 3: (CT, EXPLICIT), 5: (MR, JPEG)}
    items, sending = negotiation.roles(request, accepted)
    assert sending == {CT: [(3, EXPLICIT)], MR: [(5, JPEG)]}  # the GET context's own role is not a storage one
    ac = ul.encode_associate_ac(request, results, max_pdu_length=1 << 20, implementation_class_uid="2.25.1",
                                implementation_version="DICOMFLOW_01", role_items=items)
    pdu = A_ASSOCIATE_AC()
    pdu.decode(ac)
    granted = {str(i.sop_class_uid): (bool(i.scu_role), bool(i.scp_role)) for i in pdu.to_primitive().user_information
               if isinstance(i, SCP_SCU_RoleSelectionNegotiation)}
    assert granted == {CT: (False, True), MR: (True, True)}


def test_without_retrieve_get_contexts_are_refused_and_roles_not_answered() -> None:
    data = _with_roles(pynetdicom_rq((STUDY_GET, [EXPLICIT]), (CT, [EXPLICIT])), [(CT, False, True)])
    request = ul.parse_associate_rq(data[6:])
    negotiation = Negotiation(ReceiverSettings(), DEFAULT_SUPPORTED_TS)
    results, accepted = negotiation.contexts(request)
    assert results[0].result == ul.ABSTRACT_SYNTAX_NOT_SUPPORTED and accepted == {3: (CT, EXPLICIT)}
    assert negotiation.roles(request, accepted) == (b"", {})


def test_a_malformed_role_selection_is_a_protocol_error() -> None:
    data = _with_roles(pynetdicom_rq((CT, [EXPLICIT])), [(CT, False, True)])
    broken = data.replace(b"\x54\x00\x00\x1d\x00\x19", b"\x54\x00\x00\x1d\x00\x30")  # UID length past the item
    assert broken != data
    with pytest.raises(ul.ProtocolError):
        ul.parse_associate_rq(broken[6:])


def test_our_associate_rq_is_read_by_pynetdicom_and_by_us() -> None:
    proposed = rq.proposals([(CT, [EXPLICIT, IMPLICIT]), (CT, [JPEG])])
    data = rq.encode_associate_rq("DICOMFLOW", "STORESCP", proposed, max_pdu_length=32768)
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(data)
    primitive = pdu.to_primitive()
    assert (primitive.calling_ae_title, primitive.called_ae_title) == ("DICOMFLOW", "STORESCP")
    contexts = primitive.presentation_context_definition_list
    assert [(c.context_id, str(c.abstract_syntax), [str(t) for t in c.transfer_syntax]) for c in contexts] == [
        (1, CT, [EXPLICIT, IMPLICIT]), (3, CT, [JPEG])]
    assert primitive.maximum_length_received == 32768
    ours = ul.parse_associate_rq(data[6:])
    assert ours.contexts == [ul.ProposedContext(1, CT, (EXPLICIT, IMPLICIT)), ul.ProposedContext(3, CT, (JPEG,))]


def test_an_associate_ac_is_read_for_what_it_accepted() -> None:
    proposed = rq.proposals([(CT, [EXPLICIT, IMPLICIT]), (CT, [JPEG]), (MR, [EXPLICIT])])
    request = ul.parse_associate_rq(rq.encode_associate_rq("DICOMFLOW", "STORESCP", proposed)[6:])
    results = [ul.ContextResult(1, ul.ACCEPTANCE, IMPLICIT), ul.ContextResult(3, ul.TRANSFER_SYNTAXES_NOT_SUPPORTED, JPEG),
               ul.ContextResult(5, ul.ACCEPTANCE, EXPLICIT)]
    ac = ul.encode_associate_ac(request, results, max_pdu_length=16384, implementation_class_uid="2.25.1",
                                implementation_version="X")
    acceptance = rq.parse_associate_ac(ac[6:])
    assert acceptance.accepted == {1: IMPLICIT, 5: EXPLICIT} and acceptance.max_pdu_length == 16384
    with pytest.raises(ul.ProtocolError):
        rq.parse_associate_ac(ac[6:40])


def test_proposals_are_odd_and_at_most_128() -> None:
    many = rq.proposals([(f"1.2.3.{i}", [EXPLICIT]) for i in range(200)])
    assert len(many) == 128 and [p.context_id for p in many[:3]] == [1, 3, 5] and many[-1].context_id == 255


def test_our_c_store_rq_of_a_move_is_read_by_pydicom_and_by_us() -> None:
    data = dimse.c_store_rq(9, CT, "1.2.3.4", move_originator_ae="MOVESCU", move_originator_id=3)
    ds = read_dataset(BytesIO(data), True, True)
    assert ds.CommandGroupLength == len(data) - 12 and list(ds.keys()) == sorted(ds.keys())
    assert (ds.CommandField, ds.MessageID, ds.Priority, ds.CommandDataSetType) == (dimse.C_STORE_RQ, 9, 0, 0)
    assert (ds.AffectedSOPClassUID, ds.AffectedSOPInstanceUID) == (CT, "1.2.3.4")
    assert (ds.MoveOriginatorApplicationEntityTitle.strip(), ds.MoveOriginatorMessageID) == ("MOVESCU", 3)
    assert "MoveOriginatorMessageID" not in read_dataset(BytesIO(dimse.c_store_rq(9, CT, "1.2.3.4")), True, True)
    assert dimse.parse_command(data) == dimse.Command(dimse.C_STORE_RQ, 9, CT, "1.2.3.4", True)


def test_a_c_store_rsp_is_parsed_with_its_status() -> None:
    command = dimse.parse_command(dimse.c_store_rsp(9, CT, "1.2.3.4", 0xA700, "out of space"))
    assert (command.command_field, command.message_id_responded_to, command.status) == (dimse.C_STORE_RSP, 9, 0xA700)


@pytest.mark.parametrize("remaining", [None, 7])
def test_our_retrieve_responses_are_read_by_pydicom(remaining: int | None) -> None:
    counts = dimse.Counts(completed=3, failed=1, warning=2, remaining=remaining)
    data = dimse.c_retrieve_rsp(dimse.C_GET_RSP, 5, STUDY_GET, 0xFF00, counts, has_identifier=False)
    ds = read_dataset(BytesIO(data), True, True)
    assert list(ds.keys()) == sorted(ds.keys())
    assert (ds.CommandField, ds.MessageIDBeingRespondedTo, ds.Status, ds.CommandDataSetType) == (
        dimse.C_GET_RSP, 5, 0xFF00, 0x0101)
    assert (ds.NumberOfCompletedSuboperations, ds.NumberOfFailedSuboperations,
            ds.NumberOfWarningSuboperations) == (3, 1, 2)
    assert ds.get("NumberOfRemainingSuboperations") == remaining
    final = read_dataset(BytesIO(dimse.c_retrieve_rsp(dimse.C_MOVE_RSP, 5, STUDY_MOVE, 0xA801, None,
                                                      error_comment="Move Destination unknown")), True, True)
    assert final.Status == 0xA801 and final.ErrorComment == "Move Destination unknown"
    assert "NumberOfCompletedSuboperations" not in final


def test_a_c_move_rq_names_its_destination() -> None:
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = Dataset()
    ds.CommandGroupLength = 0
    ds.AffectedSOPClassUID = STUDY_MOVE
    ds.CommandField = dimse.C_MOVE_RQ
    ds.MessageID = 4
    ds.MoveDestination = "STORESCP"
    ds.Priority = 0
    ds.CommandDataSetType = 0
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    command = dimse.parse_command(fp.getvalue())
    assert (command.command_field, command.message_id, command.move_destination, command.has_dataset) == (
        dimse.C_MOVE_RQ, 4, "STORESCP", True)
