"""Wire-format models: exact JSON, the reference's encodings, limits, keys and hashes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomflow.errors import WireFormatError
from dicomflow.models import (
    TRANSFER_STATUSES,
    AuditEvent,
    DicomImageMeta,
    DicomStateMeta,
    DicomStoreMeta,
    decode,
    encode,
    md5_key,
    series_key,
    truncate_utf8,
    uid_hash,
)

# A store event exactly as the Rust reference's serde_json writes it
# (chrono NaiveDateTime with nanoseconds, NaiveDate, Option -> null).
RUST_STORE_EVENT = (
    '{"trace_id":"0b8f3c4e-2f6a-4c1e-9d7a-3e5b1c2d4f60","worker_node_id":"node-01",'
    '"tenant_id":"1234567890","patient_id":"PID0001","study_uid":"1.2.840.113619.2.1.1",'
    '"series_uid":"1.2.840.113619.2.1.2","sop_uid":"1.2.840.113619.2.1.3","file_size":525312,'
    '"file_path":"/data/1234567890/20240102/1.2.840.113619.2.1.1/1.2.840.113619.2.1.2/1.2.840.113619.2.1.3.dcm",'
    '"transfer_syntax_uid":"1.2.840.10008.1.2.1","number_of_frames":1,'
    '"created_time":"2024-01-02T03:04:05.123456789","series_uid_hash":"00000000000000000001",'
    '"study_uid_hash":"00000000000000000002","accession_number":null,"target_ts":"1.2.840.10008.1.2.1",'
    '"study_date":"2024-01-02","transfer_status":"NoNeedTransfer","source_ip":"10.0.0.5","source_ae":"CT01"}'
)


def store_event(**overrides: object) -> DicomStoreMeta:
    fields: dict[str, object] = dict(
        trace_id=str(uuid.uuid4()), worker_node_id="node", tenant_id="t1", patient_id="P1",
        study_uid="1.2.3", series_uid="1.2.3.4", sop_uid="1.2.3.4.5", file_size=1024,
        file_path="/data/x.dcm", transfer_syntax_uid="1.2.840.10008.1.2.1", number_of_frames=1,
        created_time=dt.datetime(2024, 1, 2, 3, 4, 5, 120000), series_uid_hash=uid_hash("1.2.3.4"),
        study_uid_hash=uid_hash("1.2.3"), accession_number="ACC1", target_ts="1.2.840.10008.1.2.1",
        study_date=dt.date(2024, 1, 2), transfer_status="Success", source_ip="127.0.0.1", source_ae="SCU",
    )
    fields.update(overrides)
    return DicomStoreMeta(**fields)  # type: ignore[arg-type]


def test_decodes_the_reference_json_exactly() -> None:
    event = decode(RUST_STORE_EVENT, DicomStoreMeta)
    assert event.created_time == dt.datetime(2024, 1, 2, 3, 4, 5, 123457)
    assert event.study_date == dt.date(2024, 1, 2)
    assert event.accession_number is None
    assert event.transfer_status == "NoNeedTransfer"
    assert event.file_size == 525312


def test_encoding_uses_the_reference_field_names_and_forms() -> None:
    event = store_event(created_time=dt.datetime(2024, 1, 2, 3, 4, 5), accession_number=None)
    data = json.loads(encode(event))
    assert list(data) == list(json.loads(RUST_STORE_EVENT))
    assert data["created_time"] == "2024-01-02T03:04:05"
    assert data["study_date"] == "2024-01-02"
    assert data["accession_number"] is None


@pytest.mark.parametrize("created", ["2024-01-02T03:04:05", "2024-01-02T03:04:05.5", "2024-01-02T03:04:05.123456"])
def test_datetimes_with_and_without_fraction(created: str) -> None:
    payload = RUST_STORE_EVENT.replace("2024-01-02T03:04:05.123456789", created)
    event = decode(payload, DicomStoreMeta)
    assert event.created_time == dt.datetime.fromisoformat(created)
    assert decode(encode(event), DicomStoreMeta) == event


@pytest.mark.parametrize("status", TRANSFER_STATUSES)
def test_every_transfer_status(status: str) -> None:
    event = decode(RUST_STORE_EVENT.replace("NoNeedTransfer", status), DicomStoreMeta)
    assert event.transfer_status == status
    assert json.loads(encode(event))["transfer_status"] == status


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        (RUST_STORE_EVENT.replace('"file_size":525312', '"file_size":"big"'), "$.file_size", "Expected `int`"),
        (RUST_STORE_EVENT.replace('"sop_uid":"1.2.840.113619.2.1.3",', ""), None, "missing required field `sop_uid`"),
        (RUST_STORE_EVENT.replace("0b8f3c4e-2f6a-4c1e-9d7a-3e5b1c2d4f60", "short"), None, "trace_id"),
        (RUST_STORE_EVENT.replace('"study_date":"2024-01-02"', '"study_date":"2024-02-30"'), "$.study_date", "date"),
        (RUST_STORE_EVENT.replace("NoNeedTransfer", "Maybe"), "$.transfer_status", "Invalid enum value"),
        (RUST_STORE_EVENT.replace("T03:04:05.123456789", "T03:04:05Z"), None, "without timezone"),
        ("{not json", None, "not valid JSON"),
    ],
)
def test_bad_payloads_name_the_field_and_problem(payload: str, field: str | None, words: str) -> None:
    with pytest.raises(WireFormatError) as info:
        decode(payload, DicomStoreMeta)
    assert words in str(info.value)
    if field:
        assert info.value.field == field


def test_overlong_strings_truncated_on_character_boundary() -> None:
    name = "王" * 30  # 90 bytes in UTF-8, limit 64
    event = store_event(patient_id=name, accession_number="A" * 40)
    assert event.patient_id == "王" * 21  # 63 bytes: the 22nd character would split
    assert len(event.patient_id.encode()) <= 64
    assert event.accession_number == "A" * 16
    decoded = decode(encode(store_event()).replace(b'"P1"', json.dumps(name, ensure_ascii=False).encode()), DicomStoreMeta)
    assert decoded.patient_id == "王" * 21


@pytest.mark.parametrize(("text", "limit", "expected"), [("abc", 2, "ab"), ("é" * 3, 5, "éé"), ("😀a", 3, ""), ("", 0, "")])
def test_truncate_utf8(text: str, limit: int, expected: str) -> None:
    assert truncate_utf8(text, limit) == expected


@given(st.text(), st.integers(min_value=0, max_value=300))
def test_truncate_utf8_never_splits_and_is_a_prefix(text: str, limit: int) -> None:
    text = text.encode("utf-8", "replace").decode("utf-8", "replace")
    out = truncate_utf8(text, limit)
    assert len(out.encode()) <= limit
    assert text.startswith(out)
    # maximal: one more character would not fit
    if out != text:
        assert len(text[: len(out) + 1].encode()) > limit


def test_uid_hash_is_seahash_padded_to_twenty_digits() -> None:
    # Test vector of the seahash crate: hash(b"to be or not to be") == 1988685042348123509.
    assert uid_hash("to be or not to be") == "01988685042348123509"
    assert len(uid_hash("1.2.840.10008.5.1.4.1.1.2")) == 20
    assert uid_hash("1.2.3").isdigit()


def test_message_keys_are_md5_of_the_joined_identifiers() -> None:
    expected = hashlib.md5(b"t1_P1_1.2.3_1.2.3.4").hexdigest()
    assert series_key("t1", "P1", "1.2.3", "1.2.3.4") == expected
    assert store_event().key() == expected
    assert md5_key("a", "b") == hashlib.md5(b"a_b").hexdigest()


# ---------------------------------------------------------------- property tests

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
_naive_dt = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1))
_times = st.times()
_floats = st.floats(allow_nan=False, allow_infinity=False)
_int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)


def _store_events() -> st.SearchStrategy[DicomStoreMeta]:
    return st.builds(
        DicomStoreMeta,
        trace_id=st.uuids().map(str), worker_node_id=_text, tenant_id=_text, patient_id=_text,
        study_uid=_text, series_uid=_text, sop_uid=_text, file_size=st.integers(0, 2**62),
        file_path=_text, transfer_syntax_uid=_text, number_of_frames=_int32, created_time=_naive_dt,
        series_uid_hash=_text, study_uid_hash=_text, accession_number=st.none() | _text, target_ts=_text,
        study_date=st.dates(), transfer_status=st.sampled_from(TRANSFER_STATUSES), source_ip=_text, source_ae=_text,
    )


def _states() -> st.SearchStrategy[DicomStateMeta]:
    opt_text = st.none() | _text
    return st.builds(
        DicomStateMeta,
        tenant_id=_text, patient_id=_text, study_uid=_text, series_uid=_text, study_uid_hash=_text,
        series_uid_hash=_text, study_date_origin=_text, patient_name=opt_text, patient_sex=opt_text,
        patient_birth_date=st.none() | st.dates(), patient_birth_time=st.none() | _times, patient_age=opt_text,
        patient_size=st.none() | _floats, patient_weight=st.none() | _floats, study_date=st.dates(),
        study_time=st.none() | _times, accession_number=opt_text, study_id=opt_text, study_description=opt_text,
        modality=opt_text, series_number=st.none() | _int32, series_date=st.none() | st.dates(),
        series_time=st.none() | _times, series_description=opt_text, body_part_examined=opt_text,
        protocol_name=opt_text, series_related_instances=st.none() | _int32, created_time=_naive_dt,
        updated_time=_naive_dt,
    )


def _images() -> st.SearchStrategy[DicomImageMeta]:
    opt_text = st.none() | _text
    opt_int = st.none() | _int32
    opt_float = st.none() | _floats
    return st.builds(
        DicomImageMeta,
        tenant_id=_text, patient_id=_text, study_uid=_text, series_uid=_text, sop_uid=_text,
        study_uid_hash=_text, series_uid_hash=_text, instance_number=opt_int,
        content_date=st.none() | st.dates(), content_time=st.none() | _times, image_type=opt_text,
        image_orientation_patient=opt_text, image_position_patient=opt_text, slice_thickness=opt_float,
        spacing_between_slices=opt_float, slice_location=opt_float, samples_per_pixel=opt_int,
        photometric_interpretation=opt_text, width=opt_int, columns=opt_int, bits_allocated=opt_int,
        bits_stored=opt_int, high_bit=opt_int, pixel_representation=opt_int, rescale_intercept=opt_float,
        rescale_slope=opt_float, rescale_type=opt_text, window_center=opt_text, window_width=opt_text,
        transfer_syntax_uid=_text, pixel_data_location=opt_text, thumbnail_location=opt_text,
        sop_class_uid=_text, image_status=opt_text, space_size=st.none() | st.integers(0, 2**62),
        created_time=_naive_dt, updated_time=_naive_dt,
    )


@settings(max_examples=150, deadline=None)
@given(_store_events())
def test_store_event_encode_decode_identity(event: DicomStoreMeta) -> None:
    assert decode(encode(event), DicomStoreMeta) == event


@settings(max_examples=100, deadline=None)
@given(_states())
def test_state_encode_decode_identity(state: DicomStateMeta) -> None:
    assert decode(encode(state), DicomStateMeta) == state


@settings(max_examples=100, deadline=None)
@given(_images())
def test_image_encode_decode_identity(image: DicomImageMeta) -> None:
    assert decode(encode(image), DicomImageMeta) == image


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_the_models_error(data: bytes) -> None:
    """Bytes either decode to a message that re-encodes to itself, or raise WireFormatError naming the model."""
    for model in (DicomStoreMeta, DicomStateMeta, DicomImageMeta, AuditEvent):
        try:
            message = decode(data, model)
        except WireFormatError as exc:
            assert exc.model == model.__name__ and exc.problem
        else:
            assert isinstance(message, model)
            assert decode(encode(message), model) == message


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | _text,
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_text, kids, max_size=4), max_leaves=20))
def test_arbitrary_json_raises_only_the_models_error(value: object) -> None:
    payload = msgspec.json.encode(value)
    try:
        event = decode(payload, DicomStoreMeta)
    except WireFormatError as exc:
        assert exc.model == "DicomStoreMeta" and exc.problem
    else:  # only a JSON object with every required field can decode
        assert isinstance(value, dict) and isinstance(event, DicomStoreMeta)
        assert decode(encode(event), DicomStoreMeta) == event


@settings(max_examples=200, deadline=None)
@given(_store_events(), st.sampled_from(list(DicomStoreMeta.__struct_fields__)),
       st.none() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=2))
def test_mutated_store_events_never_escape_the_models_error(event: DicomStoreMeta, field: str, value: object) -> None:
    data = json.loads(encode(event))
    data[field] = value
    try:
        decode(json.dumps(data), DicomStoreMeta)
    except WireFormatError as exc:
        assert exc.model == "DicomStoreMeta"
