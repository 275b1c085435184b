"""The sink's fast decoder gives exactly the model's results: rows, truncations and dead-letter reasons."""

from __future__ import annotations

import datetime as dt

import hypothesis.strategies as st
import msgspec
import pyarrow as pa
from hypothesis import given, settings

from dicomflow.errors import WireFormatError
from dicomflow.models import decode, encode
from dicomflow.warehouse.arrow import to_arrow
from dicomflow.warehouse.decoding import ARROW_ERRORS, TableDecoder
from dicomflow.warehouse.schema import TABLES, Table, table
from dicomflow.warehouse.synthetic import instance_messages, state_message, traffic


def reference(t: Table, items: list[tuple[int, bytes]]) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The model's path, message by message (what the sink did before the fast decoder)."""
    good: list[msgspec.Struct] = []
    seqs: list[int] = []
    poison: list[tuple[int, str]] = []
    for seq, value in items:
        try:
            m = decode(value, t.model)
            to_arrow(t, [m], [seq])
        except WireFormatError as exc:
            poison.append((seq, str(exc)))
            continue
        except ARROW_ERRORS as exc:
            poison.append((seq, f"a value does not fit table {t.name}: {exc}"))
            continue
        good.append(m)
        seqs.append(seq)
    return to_arrow(t, good, seqs), poison


def assert_same(t: Table, values: list[bytes]) -> None:
    items = list(enumerate(values))
    got = TableDecoder(t).decode(items)
    rows, poison = reference(t, items)
    assert got.rows.sort_by("_seq").equals(rows.sort_by("_seq"))
    assert sorted(got.poison) == sorted(poison)


def _patched(value: bytes, **changes: object) -> bytes:
    obj = msgspec.json.decode(value)
    obj.update(changes)
    return msgspec.json.encode(obj)


def test_valid_traffic_decodes_on_the_fast_path() -> None:
    tr = traffic(60, series_size=20, run=7)
    for t in TABLES:
        values = [v for _, v in tr.messages[t.topic_attr]]
        got = TableDecoder(t).decode(list(enumerate(values)))
        assert got.slow == 0 and got.poison == []
        assert got.rows.equals(reference(t, list(enumerate(values)))[0])


def test_edge_cases_match_the_model() -> None:
    store, image = instance_messages(9, 1, 2, 3)
    s, i = encode(store), encode(image)
    receipts = [
        s,
        _patched(s, trace_id="short"),  # model: 36 characters
        _patched(s, number_of_frames=2**31),  # model: int32
        _patched(s, file_size=2**63),  # model: int64 (msgspec or __post_init__)
        _patched(s, created_time="2025-03-04T10:00:00.123456+02:00"),  # model: no timezone
        _patched(s, created_time="2025-03-04T10:00:00.123456789"),  # nanoseconds: rounded, kept
        _patched(s, tenant_id="病院" * 40),  # multi-byte, over 64 bytes: truncated on a character boundary
        _patched(s, source_ae="x" * 65),  # ASCII over the limit: truncated
        _patched(s, accession_number=None),
        _patched(s, transfer_status="Lost"),
        _patched(s, file_size="12"),
        b"{not json",
        b"[]",
        s,  # a duplicate stays a row here (deduplication is the write's job)
    ]
    assert_same(table("receipts"), receipts)
    instances = [
        i,
        _patched(i, instance_number=2**40),  # fits the model, not the int32 column: dead letter
        _patched(i, space_size=2**62),
        _patched(i, image_type="ÄÖ" * 70),
        _patched(i, updated_time="2025-03-04T10:00:00Z"),
        _patched(i, width=None, rescale_slope=2),
    ]
    assert_same(table("instances"), instances)
    state = encode(state_message(9, 1, 2, instances=4))
    assert_same(table("series_states"), [state, _patched(state, patient_sex="女"), _patched(state, study_date="2025-02-30")])


text = st.text(st.characters(codec="utf-8"), max_size=80)


@settings(max_examples=150, deadline=None)
@given(tenant=text, patient=text, accession=st.none() | text, frames=st.integers(-(2**40), 2**40),
       micro=st.integers(0, 999_999), tz=st.booleans())
def test_random_receipts_match_the_model(tenant: str, patient: str, accession: str | None, frames: int,
                                         micro: int, tz: bool) -> None:
    store, _ = instance_messages(9, 1, 2, 3)
    when = dt.datetime(2025, 3, 4, 10, 0, 0, micro).isoformat() + ("+01:00" if tz else "")
    value = _patched(encode(store), tenant_id=tenant, patient_id=patient, accession_number=accession,
                     number_of_frames=frames, created_time=when)
    assert_same(table("receipts"), [value, encode(store)])


def test_row_wise_and_column_wise_arrow_conversions_agree() -> None:
    from dicomflow.warehouse.arrow import _by_columns, arrow_schema

    tr = traffic(30, series_size=10, run=8)
    store, image = instance_messages(9, 1, 2, 3)
    extra = {"log": [_patched(encode(store), accession_number=None, tenant_id="病院")],
             "dicom_image": [_patched(encode(image), width=None, space_size=2**40, slice_location=-0.0)]}
    for t in TABLES:
        values = [v for _, v in tr.messages[t.topic_attr]] + extra.get(t.topic_attr, [])
        models = [decode(v, t.model) for v in values]
        seq = list(range(len(models)))
        fast = to_arrow(t, models, seq)
        assert fast.schema == arrow_schema(t)
        assert fast.equals(_by_columns(t, arrow_schema(t), models, seq))
