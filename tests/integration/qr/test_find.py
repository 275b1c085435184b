"""C-FIND against the receiver (native engine) with real clients: dcmtk's findscu and pynetdicom, a real index."""

from __future__ import annotations

import dataclasses
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pydicom.config
import pytest
from psycopg import sql
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from dicomflow.audit.cfind import QUERY
from dicomflow.dicom.values import Values
from dicomflow.dicom.walker import read_elements
from dicomflow.kafka.admin import delete_topics
from dicomflow.qr import exceptions as st
from dicomflow.receiver import upperlayer as ul
from dicomflow.settings import QrSettings, Settings
from dicomflow.stack import LocalStack
from tests.integration.ingest_support import make_topics, read_audit, running_receiver, with_ingest, with_receiver
from tests.integration.qr.qr_support import BIG_SERIES, OTHER_AE, OTHER_TENANT, TENANT, fill_index, find_rq, findscu
from tests.unit.receiver.test_upperlayer import pynetdicom_rq

PATIENT_ROOT = PatientRootQueryRetrieveInformationModelFind
STUDY_ROOT = StudyRootQueryRetrieveInformationModelFind


def uid(*parts: int) -> str:
    """The synthetic index's UIDs (dicomflow.warehouse.synthetic)."""
    return "1.2.826.0.1.3680043.10.1137." + ".".join(map(str, parts))


@pytest.fixture(scope="module")
def indexed(stack: LocalStack) -> Iterator[Settings]:
    """Settings over one filled index (its own database and topics) for the module."""
    suffix = uuid.uuid4().hex[:10]
    base = stack.settings
    topics = dataclasses.replace(
        base.topics, main=f"qr_{suffix}", log=f"qr_log_{suffix}", dicom_state=f"qr_state_{suffix}",
        dicom_image=f"qr_image_{suffix}", audit=f"qr_audit_{suffix}", dlq=f"qr_{suffix}.dlq", partitions=1,
    )
    dbname = f"dicomflow_qr_{suffix}"
    admin = stack.postgres.admin_conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(base.database.user)))
    settings = dataclasses.replace(base, topics=topics, database=dataclasses.replace(base.database, dbname=dbname),
                                   storage=dataclasses.replace(base.storage, default_tenant=TENANT))
    settings = with_ingest(settings, ae_tenants={OTHER_AE: OTHER_TENANT})
    make_topics(settings)
    fill_index(settings.database)
    yield settings
    delete_topics(settings.kafka, topics.all())
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


@contextmanager
def receiver(settings: Settings, tmp_path: Path, engine: str = "native", **qr: Any) -> Iterator[int]:
    """A receiver on the index (its storage root under ``tmp_path``); yields its port."""
    s = with_receiver(dataclasses.replace(settings, storage=dataclasses.replace(settings.storage, root=tmp_path / "root"),
                                          qr=dataclasses.replace(QrSettings(), **qr)), engine=engine)
    with running_receiver(s) as running:
        yield running.address[1]  # type: ignore[attr-defined]


@pytest.fixture(params=["native", "pynetdicom"])
def engine(request: pytest.FixtureRequest) -> str:
    """Every C-FIND test runs against both network engines."""
    return str(request.param)


@pytest.fixture
def port(indexed: Settings, tmp_path: Path, engine: str) -> Iterator[int]:
    with receiver(indexed, tmp_path, engine) as p:
        yield p


def values(answers: list[Dataset], keyword: str) -> list[Any]:
    return [a.get(keyword) for a in answers]


# ----------------------------------------------------------------------------- dcmtk findscu


def test_findscu_patient_root_patient_level_wildcard_name(port: int, tmp_path: Path) -> None:
    run, answers = findscu(port, tmp_path / "out", "QueryRetrieveLevel=PATIENT", "PatientName=doe*", "PatientID",
                           "NumberOfPatientRelatedStudies", "PatientBirthDate", model="-P")
    assert run.returncode == 0, run.stderr
    assert values(answers, "PatientID") == ["PAT-1"]  # not PAT-9: another tenant's patient
    (john,) = answers
    assert str(john.PatientName) == "Doe^John" and john.NumberOfPatientRelatedStudies == 2
    assert john.SpecificCharacterSet == "ISO_IR 192" and john.QueryRetrieveLevel == "PATIENT"
    assert "PatientBirthDate" in john and john.PatientBirthDate == ""  # asked, not held: returned empty


def test_findscu_study_root_study_date_range_and_modalities(port: int, tmp_path: Path) -> None:
    keys = ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
    run, answers = findscu(port, tmp_path / "a", *keys, "StudyDate=20231201-20240131")
    assert run.returncode == 0, run.stderr
    assert values(answers, "StudyInstanceUID") == [uid(1, 1), uid(1, 3)]  # newest first
    assert list(answers[0].ModalitiesInStudy) == ["CT", "SR"]
    assert (answers[0].NumberOfStudyRelatedSeries, answers[0].NumberOfStudyRelatedInstances) == (2, 4)
    _, answers = findscu(port, tmp_path / "b", *keys, "StudyDate=20240101-")
    assert values(answers, "StudyInstanceUID") == [uid(1, 2), uid(1, 1)]
    _, answers = findscu(port, tmp_path / "c", *keys, "StudyDate=-20221231")
    assert values(answers, "StudyInstanceUID") == [uid(1, 4), uid(1, 5)]
    _, answers = findscu(port, tmp_path / "d", *keys, "ModalitiesInStudy=MR")
    assert values(answers, "StudyInstanceUID") == [uid(1, 2)]
    _, answers = findscu(port, tmp_path / "e", *keys, "StudyTime=0800-0900")
    assert values(answers, "StudyInstanceUID") == [uid(1, 1)]


def test_findscu_patient_root_study_and_series_levels(port: int, tmp_path: Path) -> None:
    run, answers = findscu(port, tmp_path / "a", "QueryRetrieveLevel=STUDY", "PatientID=PAT-1", "StudyInstanceUID",
                           "StudyDate", model="-P")
    assert run.returncode == 0, run.stderr
    assert values(answers, "StudyInstanceUID") == [uid(1, 2), uid(1, 1)]
    assert values(answers, "StudyDate") == ["20240310", "20240105"]
    _, answers = findscu(port, tmp_path / "b", "QueryRetrieveLevel=SERIES", "PatientID=PAT-1",
                         f"StudyInstanceUID={uid(1, 1)}", "SeriesInstanceUID", "Modality=CT",
                         "NumberOfSeriesRelatedInstances", model="-P")
    assert values(answers, "SeriesInstanceUID") == [uid(1, 1, 1)]
    assert answers[0].NumberOfSeriesRelatedInstances == 3


def test_findscu_image_level_uid_list(port: int, tmp_path: Path) -> None:
    wanted = [uid(1, 1, 1, 1), uid(1, 1, 1, 3)]
    run, answers = findscu(port, tmp_path / "a", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={uid(1, 1)}",
                           f"SeriesInstanceUID={uid(1, 1, 1)}", "SOPInstanceUID=" + "\\".join(wanted), "InstanceNumber",
                           "SOPClassUID", "Rows")
    assert run.returncode == 0, run.stderr
    assert values(answers, "SOPInstanceUID") == wanted
    assert values(answers, "InstanceNumber") == [1, 3]
    assert all(a.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and a.Rows == 512 for a in answers)
    _, answers = findscu(port, tmp_path / "b", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={uid(1, 1)}\\{uid(1, 3)}")
    assert values(answers, "StudyInstanceUID") == [uid(1, 1), uid(1, 3)]


def test_a_calling_ae_of_another_tenant_finds_only_its_own(port: int, tmp_path: Path) -> None:
    run, answers = findscu(port, tmp_path / "a", "QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID",
                           calling=OTHER_AE)
    assert run.returncode == 0, run.stderr
    assert values(answers, "PatientID") == ["PAT-9"]
    _, answers = findscu(port, tmp_path / "b", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={uid(1, 1)}",
                         calling=OTHER_AE)
    assert answers == []


# ----------------------------------------------------------------------------- pynetdicom


@contextmanager
def associate(port: int, calling: str = "PYSCU") -> Iterator[Association]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(PATIENT_ROOT)
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMFLOW")
    assert assoc.is_established
    try:
        yield assoc
    finally:
        assoc.release()


def find(assoc: Association, ds: Dataset, model: Any = STUDY_ROOT) -> tuple[list[tuple[int, Dataset]], Dataset]:
    """(pending status, identifier) of each match, and the final status data set."""
    pending = []
    for status, identifier in assoc.send_c_find(ds, model):
        assert status is not None, "no response"
        if status.Status in (st.PENDING, st.PENDING_WARNING):
            pending.append((int(status.Status), identifier))
        else:
            return pending, status
    raise AssertionError("no final response")


def query(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


def test_pynetdicom_levels_charset_and_unknown_keys(port: int) -> None:
    with associate(port) as assoc:
        pending, final = find(assoc, query("PATIENT", PatientName="D*", PatientID=""), PATIENT_ROOT)
        assert final.Status == st.SUCCESS
        assert sorted(str(ds.PatientName) for _, ds in pending) == ["Doe^John", "Dörte^Zoë"]
        assert {ds.SpecificCharacterSet for _, ds in pending} == {"ISO_IR 192"}
        pending, final = find(assoc, query("STUDY", PatientName="dörte^zoë", StudyInstanceUID="",
                                           ReferringPhysicianName=""))
        assert [(status, ds.StudyInstanceUID, ds.ReferringPhysicianName) for status, ds in pending] == [
            (st.PENDING_WARNING, uid(1, 4), "")]  # a key the index lacks: answered empty, said so
        pending, final = find(assoc, query("SERIES", StudyInstanceUID=uid(1, 1), SeriesInstanceUID="",
                                           SeriesNumber="2"))
        assert [ds.SeriesInstanceUID for _, ds in pending] == [uid(1, 1, 2)]


def test_pynetdicom_refusals(port: int) -> None:
    with associate(port) as assoc:
        _, final = find(assoc, query("SERIES", SeriesInstanceUID=""))  # no StudyInstanceUID above the level
        assert final.Status == st.IDENTIFIER_DOES_NOT_MATCH
        _, final = find(assoc, query("STUDY", StudyInstanceUID="", Modality="CT"))  # a series key: relational
        assert final.Status == st.IDENTIFIER_DOES_NOT_MATCH and "relational" in final.ErrorComment
        _, final = find(assoc, query("PATIENT", PatientID=""))  # no PATIENT level in Study Root
        assert final.Status == st.IDENTIFIER_DOES_NOT_MATCH
        _, final = find(assoc, query("SERIES", StudyInstanceUID=[uid(1, 1), uid(1, 2)], SeriesInstanceUID=""))
        assert final.Status == st.IDENTIFIER_DOES_NOT_MATCH  # a list of the unique key above the level
        with pydicom.config.disable_value_validation():
            bad_date = query("STUDY", StudyDate="2024-13-01-")
        _, final = find(assoc, bad_date)
        assert final.Status == st.UNABLE_TO_PROCESS
        pending, final = find(assoc, query("STUDY", StudyInstanceUID=""))  # the association goes on
        assert final.Status == st.SUCCESS and len(pending) == 5


def test_c_cancel_stops_the_matches(indexed: Settings, tmp_path: Path, engine: str) -> None:
    # max_results as large as the series: the only early end left is the cancel. Under the default 1,000 a
    # loaded machine let pynetdicom's engine send 1,000 matches before it saw the cancel, and the limit won.
    with receiver(indexed, tmp_path, engine, max_results=BIG_SERIES) as port, associate(port) as assoc:
        (context,) = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == STUDY_ROOT]
        identifier = query("IMAGE", StudyInstanceUID=uid(1, 5), SeriesInstanceUID=uid(1, 5, 1), SOPInstanceUID="")
        received, final = 0, None
        for status, _ in assoc.send_c_find(identifier, STUDY_ROOT, msg_id=7):
            if status.Status == st.PENDING:
                received += 1
                if received == 1:
                    assoc.send_c_cancel(7, context.context_id)
            else:
                final = status
        assert final is not None and final.Status == st.CANCEL
        assert 1 <= received < BIG_SERIES
        pending, final = find(assoc, query("STUDY", StudyInstanceUID=uid(1, 1)))
        assert final.Status == st.SUCCESS and len(pending) == 1


def test_max_results_ends_with_the_response_limit_warning(indexed: Settings, tmp_path: Path, engine: str) -> None:
    with receiver(indexed, tmp_path, engine, max_results=2) as limited, associate(limited) as assoc:
        pending, final = find(assoc, query("STUDY", StudyInstanceUID=""))
        # pynetdicom does not end a C-FIND on a warning: that engine answers the limit with 0xA700 (docs/qr.md)
        expected = st.RESPONSE_LIMIT if engine == "native" else st.OUT_OF_RESOURCES
        assert len(pending) == 2 and final.Status == expected and "max_results" in final.ErrorComment
        pending, final = find(assoc, query("STUDY", StudyInstanceUID="", PatientID="PAT-1"))
        assert len(pending) == 2 and final.Status == st.SUCCESS  # exactly at the limit


def test_every_query_is_audited(indexed: Settings, tmp_path: Path) -> None:
    marker = "Audit^Marker*"
    with receiver(indexed, tmp_path) as p, associate(p, calling=OTHER_AE) as assoc:
        find(assoc, query("STUDY", PatientName=marker))
    events = [e for e in read_audit(indexed) if e.event_id.code == QUERY.code
              and e.active_participants[0].user_id == OTHER_AE]
    assert events, "no Query audit event"
    event = events[-1]
    assert event.tenant_id == OTHER_TENANT and event.event_action == "E" and event.event_outcome == 0
    (obj,) = event.participant_objects
    assert obj.object_id == STUDY_ROOT and obj.details["results"] == "0" and obj.details["status"] == "0x0000"


def test_a_find_without_identifier_is_answered_and_the_association_goes_on(indexed: Settings, tmp_path: Path) -> None:
    """Native engine: a C-FIND-RQ that says no identifier follows gets a final 0xC000, not silence."""
    with receiver(indexed, tmp_path) as p, socket.create_connection(("127.0.0.1", p), timeout=10) as sock:
        sock.sendall(pynetdicom_rq((STUDY_ROOT, ["1.2.840.10008.1.2"])))
        assert ul.read_pdu(sock, 1 << 20)[0] == 0x02
        sock.sendall(b"".join(ul.encode_pdata(1, ul.COMMAND, find_rq(3, STUDY_ROOT, with_identifier=False), 0)))
        kind, body = ul.read_pdu(sock, 1 << 20)
        (_, control, fragment), = list(ul.iter_pdvs(body))
        assert kind == ul.P_DATA_TF and control & ul.COMMAND
        v = Values(read_elements(bytes(fragment), frozenset({0x00000900, 0x00000120})), "rsp")
        assert (v.unsigned_short(0x00000900), v.unsigned_short(0x00000120)) == (st.UNABLE_TO_PROCESS, 3)
        sock.sendall(bytes([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
        assert ul.read_pdu(sock, 1 << 16)[0] == 0x06  # A-RELEASE-RP: the association was still fine
