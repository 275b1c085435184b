"""The wire format: messages exchanged with the Rust reference services, field for field.

Each message is a :class:`msgspec.Struct` whose JSON is byte-compatible with the
Rust reference's serde structs (``DicomStoreMeta``, ``DicomStateMeta``,
``DicomImageMeta``): the same field names, ``null`` for absent optionals,
dates as ``YYYY-MM-DD``, times as ``HH:MM:SS[.ffffff]``, datetimes as
``YYYY-MM-DDTHH:MM:SS[.ffffff]`` with no timezone.

Strings have byte limits (the reference's ``BoundedString<N>`` and the
PostgreSQL ``varchar(N)`` columns). Over-long strings are truncated to the
limit *on a character boundary* when a message is built or decoded, never
split inside a multi-byte character (the Rust reference's did: docs/architecture.md,
"What the Rust reference services got wrong", 8).

msgspec was chosen over pydantic and the standard json module because it
validates while it decodes, names the failing field (``$.trace_id``), and
encodes and decodes several times faster, which matters at the publisher's
100,000 events/s target.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, ClassVar, Literal, TypeVar

import msgspec
import seahash

from dicomflow.errors import WireFormatError

TransferStatus = Literal["NoNeedTransfer", "Success", "Failed", "NeedTransfer"]
TRANSFER_STATUSES: tuple[str, ...] = ("NoNeedTransfer", "Success", "Failed", "NeedTransfer")


# --------------------------------------------------------------------------- text


def truncate_utf8(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes without splitting a character.

    Why: the Rust reference sliced at a byte index and crashed on multi-byte
    characters (Chinese and Japanese patient names are common in this domain).
    """
    if len(text) * 4 <= limit:
        return text
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    # Decoding with "ignore" drops the incomplete trailing sequence only: the
    # prefix of a valid encoding is valid up to the cut.
    return raw[:limit].decode("utf-8", "ignore")


def uid_hash(uid: str) -> str:
    """The reference's ``hash_uid``: SeaHash of the UID bytes, 20 decimal digits.

    SeaHash with its default keys (the Rust ``seahash::hash``), as an unsigned
    64-bit integer, zero-padded to 20 digits so that it sorts as text.
    """
    return f"{seahash.hash(uid.encode('utf-8')):020d}"


def md5_key(*parts: str) -> str:
    """Message key: md5 hex of the parts joined with ``_`` (the reference's keys)."""
    return hashlib.md5("_".join(parts).encode("utf-8"), usedforsecurity=False).hexdigest()


def series_key(tenant_id: str, patient_id: str, study_uid: str, series_uid: str) -> str:
    """Key of a series: partitions storage_queue and dicom_state_queue by series."""
    return md5_key(tenant_id, patient_id, study_uid, series_uid)


# --------------------------------------------------------------------------- base


class _Wire(msgspec.Struct, kw_only=True):
    """Common behaviour: byte limits enforced at construction and at decoding."""

    #: field name -> byte limit, filled in by each subclass.
    _limits: ClassVar[tuple[tuple[str, int], ...]] = ()
    _datetimes: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for name, limit in self._limits:
            value = getattr(self, name)
            if value is None:
                continue
            n = len(value)
            # Fast path: most values are short ASCII (UIDs, codes), which fit as they are.
            if n <= limit and (n * 4 <= limit or value.isascii()):
                continue
            setattr(self, name, truncate_utf8(value, limit))
        for name in self._datetimes:
            value = getattr(self, name)
            if value is not None and value.tzinfo is not None:
                raise ValueError(f"`{name}` must be a datetime without timezone, got {value.isoformat()}")


def _byte_limits(**limits: int) -> tuple[tuple[str, int], ...]:
    return tuple(limits.items())


# --------------------------------------------------------------------------- store event


class DicomStoreMeta(_Wire, kw_only=True):
    """A store event: one instance was written under the storage root."""

    trace_id: str
    worker_node_id: str
    tenant_id: str
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    file_size: int
    file_path: str
    transfer_syntax_uid: str
    number_of_frames: int
    created_time: dt.datetime
    series_uid_hash: str
    study_uid_hash: str
    accession_number: str | None = None
    target_ts: str
    study_date: dt.date
    transfer_status: TransferStatus
    source_ip: str
    source_ae: str

    _limits = _byte_limits(
        worker_node_id=64, tenant_id=64, patient_id=64, study_uid=64, series_uid=64, sop_uid=64,
        file_path=512, transfer_syntax_uid=64, series_uid_hash=20, study_uid_hash=20,
        accession_number=16, target_ts=64, source_ip=24, source_ae=64,
    )
    _datetimes = ("created_time",)

    def __post_init__(self) -> None:
        if len(self.trace_id) != 36:
            raise ValueError(f"`trace_id` must be 36 characters (a UUID), got {len(self.trace_id)}")
        if not -(2**31) <= self.number_of_frames < 2**31:
            raise ValueError("`number_of_frames` does not fit in int32")
        if not -(2**63) <= self.file_size < 2**63:
            raise ValueError("`file_size` does not fit in int64")
        super().__post_init__()

    def key(self) -> str:
        """storage_queue key: the series key, so a series stays on one partition, in order."""
        return series_key(self.tenant_id, self.patient_id, self.study_uid, self.series_uid)


# --------------------------------------------------------------------------- series state


class DicomStateMeta(_Wire, kw_only=True):
    """The state of one series: patient, study and series attributes."""

    tenant_id: str
    patient_id: str
    study_uid: str
    series_uid: str
    study_uid_hash: str
    series_uid_hash: str
    study_date_origin: str
    patient_name: str | None = None
    patient_sex: str | None = None
    patient_birth_date: dt.date | None = None
    patient_birth_time: dt.time | None = None
    patient_age: str | None = None
    patient_size: float | None = None
    patient_weight: float | None = None
    study_date: dt.date
    study_time: dt.time | None = None
    accession_number: str | None = None
    study_id: str | None = None
    study_description: str | None = None
    modality: str | None = None
    series_number: int | None = None
    series_date: dt.date | None = None
    series_time: dt.time | None = None
    series_description: str | None = None
    body_part_examined: str | None = None
    protocol_name: str | None = None
    series_related_instances: int | None = None
    created_time: dt.datetime
    updated_time: dt.datetime

    _limits = _byte_limits(
        tenant_id=64, patient_id=64, study_uid=64, series_uid=64, study_uid_hash=20,
        series_uid_hash=20, study_date_origin=8, patient_name=64, patient_sex=1, patient_age=16,
        accession_number=16, study_id=16, study_description=64, modality=16,
        series_description=256, body_part_examined=64, protocol_name=64,
    )
    _datetimes = ("created_time", "updated_time")

    def key(self) -> str:
        """dicom_state_queue key: md5 of tenant_patient_study_series."""
        return series_key(self.tenant_id, self.patient_id, self.study_uid, self.series_uid)


# --------------------------------------------------------------------------- instance


class DicomImageMeta(_Wire, kw_only=True):
    """The metadata of one instance (image)."""

    tenant_id: str
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    study_uid_hash: str
    series_uid_hash: str
    instance_number: int | None = None
    content_date: dt.date | None = None
    content_time: dt.time | None = None
    image_type: str | None = None
    image_orientation_patient: str | None = None
    image_position_patient: str | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    slice_location: float | None = None
    samples_per_pixel: int | None = None
    photometric_interpretation: str | None = None
    #: Rows (0028,0010): the image's *height* in pixels, whatever the name says. ``width`` is the
    #: reference's field and column name, kept so that messages stay interchangeable; code that reads
    #: it names its own variables ``rows`` (the SQL of store/queries.py selects it ``AS rows``).
    width: int | None = None
    #: Columns (0028,0011): the image's width in pixels.
    columns: int | None = None
    bits_allocated: int | None = None
    bits_stored: int | None = None
    high_bit: int | None = None
    pixel_representation: int | None = None
    rescale_intercept: float | None = None
    rescale_slope: float | None = None
    rescale_type: str | None = None
    window_center: str | None = None
    window_width: str | None = None
    transfer_syntax_uid: str
    pixel_data_location: str | None = None
    thumbnail_location: str | None = None
    sop_class_uid: str
    image_status: str | None = None
    space_size: int | None = None
    created_time: dt.datetime
    updated_time: dt.datetime

    _limits = _byte_limits(
        tenant_id=64, patient_id=64, study_uid=64, series_uid=64, sop_uid=64, study_uid_hash=20,
        series_uid_hash=20, image_type=128, image_orientation_patient=128,
        image_position_patient=64, photometric_interpretation=32, rescale_type=64,
        window_center=64, window_width=64, transfer_syntax_uid=64, pixel_data_location=512,
        thumbnail_location=512, sop_class_uid=64, image_status=32,
    )
    _datetimes = ("created_time", "updated_time")

    def key(self) -> str:
        """dicom_image_queue key: md5 of tenant_patient_study_series_sop."""
        return md5_key(self.tenant_id, self.patient_id, self.study_uid, self.series_uid, self.sop_uid)


# --------------------------------------------------------------------------- audit


class CodedValue(msgspec.Struct, kw_only=True):
    """A DICOM coded entry (code value, coding scheme designator, code meaning)."""

    code: str
    scheme: str = "DCM"
    meaning: str


class ActiveParticipant(msgspec.Struct, kw_only=True):
    """Who took part: an application (AE title) or a person, and from where."""

    user_id: str
    alternative_user_id: str | None = None
    user_name: str | None = None
    user_is_requestor: bool = False
    role_id: CodedValue | None = None
    network_access_point_id: str | None = None
    #: 1 = machine name, 2 = IP address (RFC 3881 / PS3.15).
    network_access_point_type: int | None = None


class ParticipantObject(msgspec.Struct, kw_only=True):
    """What was acted upon: a study, a patient, a file; with details as name/value pairs."""

    object_id: str
    #: PS3.15 ParticipantObjectIDTypeCode (110180 Study Instance UID, 2 Patient Number ...).
    id_type: CodedValue
    #: 1 person, 2 system object, 3 organization, 4 other.
    type_code: int = 2
    #: 3 report, 4 master file ... (RFC 3881 role).
    type_code_role: int | None = None
    object_name: str | None = None
    details: dict[str, str] = msgspec.field(default_factory=dict)


class AuditEvent(msgspec.Struct, kw_only=True):
    """A DICOM PS3.15-style audit message, as JSON on audit_queue (key: tenant)."""

    event_id: CodedValue
    event_type: list[CodedValue] = msgspec.field(default_factory=list)
    #: C create, R read, U update, D delete, E execute.
    event_action: Literal["C", "R", "U", "D", "E"]
    event_date_time: dt.datetime
    #: 0 success, 4 minor failure, 8 serious failure, 12 major failure.
    event_outcome: Literal[0, 4, 8, 12]
    event_outcome_description: str | None = None
    tenant_id: str
    audit_source_id: str
    active_participants: list[ActiveParticipant] = msgspec.field(default_factory=list)
    participant_objects: list[ParticipantObject] = msgspec.field(default_factory=list)

    def key(self) -> str:
        """audit_queue key: the tenant, so one tenant's trail stays in order."""
        return self.tenant_id


# --------------------------------------------------------------------------- codec

M = TypeVar("M", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def encode(message: msgspec.Struct) -> bytes:
    """Serialize a message to its wire JSON (UTF-8 bytes)."""
    return _encoder.encode(message)


def encode_many(messages: list[Any]) -> list[bytes]:
    """Serialize several messages; one encoder call per message, no intermediate objects."""
    enc = _encoder.encode
    return [enc(m) for m in messages]


def decode(payload: bytes | str, model: type[M]) -> M:
    """Parse and validate wire JSON into ``model``.

    Raises:
        WireFormatError: for any problem (not JSON, wrong type, missing
            field, bad date, trace_id not 36 characters), naming the field.
            Never any other exception type, whatever the input bytes.
    """
    decoder = _decoders.get(model)
    if decoder is None:
        decoder = _decoders[model] = msgspec.json.Decoder(model)
    try:
        result: M = decoder.decode(payload)
        return result
    except msgspec.ValidationError as exc:
        problem, _, field = str(exc).partition(" - at ")
        raise WireFormatError(model.__name__, problem, field.strip("`") or None) from exc
    except msgspec.DecodeError as exc:
        raise WireFormatError(model.__name__, f"not valid JSON: {exc}") from exc
    except (ValueError, TypeError, OverflowError, UnicodeError, RecursionError) as exc:
        raise WireFormatError(model.__name__, str(exc)) from exc


def now() -> dt.datetime:
    """Current local wall-clock time without timezone, microsecond precision (the reference's NaiveDateTime)."""
    return dt.datetime.now()


__all__ = [
    "TRANSFER_STATUSES",
    "ActiveParticipant",
    "AuditEvent",
    "CodedValue",
    "DicomImageMeta",
    "DicomStateMeta",
    "DicomStoreMeta",
    "ParticipantObject",
    "TransferStatus",
    "decode",
    "encode",
    "encode_many",
    "md5_key",
    "now",
    "series_key",
    "truncate_utf8",
    "uid_hash",
]
