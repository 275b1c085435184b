"""The retrieve identifier's unique keys, the syntax chosen per peer, the contexts proposed to a destination."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from dicomflow.errors import ConfigError
from dicomflow.ingest.tenant import TenantResolver
from dicomflow.qr.contexts import MAX_CONTEXTS, destination_contexts
from dicomflow.qr.retrieve import Retriever, choose_syntax
from dicomflow.qr.retrieve_keys import IDENTIFIER_MISMATCH, RetrieveRefused, retrieve_of
from dicomflow.settings import Settings, StorageSettings
from dicomflow.settings.qr import QrSettings, parse_destination
from dicomflow.store.retrieval import RetrieveKeys

EXPLICIT, IMPLICIT, RLE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.5"


def ident(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a malformed UID on purpose
        for key, value in keys.items():
            setattr(ds, key, value)
    return ds


def test_each_level_takes_its_keys() -> None:
    assert retrieve_of(ident("PATIENT", PatientID="P1"), "patient").keys == RetrieveKeys(patient_id="P1")
    assert retrieve_of(ident("STUDY", StudyInstanceUID=["1.2.3", "1.2.4"]), "study").keys == RetrieveKeys(
        study_uids=("1.2.3", "1.2.4"))
    got = retrieve_of(ident("IMAGE", StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3", SOPInstanceUID=["1.2.3.4"]),
                      "study")
    assert got.level == "IMAGE" and got.keys.sop_uids == ("1.2.3.4",) and got.keys.series_uids == ("1.2.3",)


@pytest.mark.parametrize(("identifier", "model", "why"), [
    (ident("PATIENT", PatientID="P1"), "study", "is not one of"),
    (ident("PATIENT"), "patient", "needs a PatientID"),
    (ident("SERIES", StudyInstanceUID="1.2"), "study", "needs SeriesInstanceUID"),
    (ident("STUDY", StudyInstanceUID="1.2", SOPInstanceUID="1.2.3"), "study", "below the STUDY"),
    (ident("SERIES", StudyInstanceUID=["1.2", "1.3"], SeriesInstanceUID="1.2.3"), "study", "must be one value"),
    (ident("STUDY", StudyInstanceUID="1.2.03"), "study", "is not a UID"),
    (ident("FRAME", StudyInstanceUID="1.2"), "study", "is not one of"),
])
def test_bad_identifiers_are_refused_with_a900_and_why(identifier: Dataset, model: str, why: str) -> None:
    with pytest.raises(RetrieveRefused) as refused:
        retrieve_of(identifier, model)  # type: ignore[arg-type]
    assert refused.value.status == IDENTIFIER_MISMATCH and why in refused.value.reason


def test_the_stored_syntax_is_kept_when_accepted_else_uncompressed() -> None:
    assert choose_syntax(RLE, [RLE, EXPLICIT]) == RLE
    assert choose_syntax(RLE, [IMPLICIT, EXPLICIT]) == EXPLICIT
    assert choose_syntax(EXPLICIT, [IMPLICIT]) == IMPLICIT
    assert choose_syntax(RLE, []) is None


def test_destination_contexts_offer_each_stored_syntax_alone_and_an_uncompressed_fallback() -> None:
    ct = "1.2.840.10008.5.1.4.1.1.2"
    contexts = [(str(c.abstract_syntax), list(c.transfer_syntax)) for c in destination_contexts(
        [(ct, RLE), (ct, EXPLICIT), (ct, RLE)])]
    assert contexts == [(ct, [EXPLICIT, IMPLICIT]), (ct, [RLE]), (ct, [EXPLICIT])]
    many = destination_contexts((f"1.2.840.10008.5.1.4.1.1.{i}", RLE) for i in range(200))
    assert len(many) == MAX_CONTEXTS


@pytest.mark.parametrize(("value", "expected"), [
    ("pacs.example:104", ("pacs.example", 104)), ("[::1]:11112", ("::1", 11112)),
    ("host", None), ("host:0", None), ("host:http", None), (":104", None),
])
def test_destinations_are_host_and_port(value: str, expected: tuple[str, int] | None) -> None:
    assert parse_destination(value) == expected


def test_a_bad_destination_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    settings = Settings(storage=StorageSettings(root=tmp_path),
                        qr=QrSettings(enabled=True, destinations={"PACS": "pacs.example"}))
    with pytest.raises(ConfigError, match=r"qr\.destinations\.PACS"):
        Retriever(settings, TenantResolver({}, "default"), lambda events: None)
