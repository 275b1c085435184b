"""Synthetic warehouse traffic: valid wire messages for the four topics, without DICOM files.

For the warehouse's tests, benchmark and fault-injection phase, which need
many real messages on real topics but not the files behind them: each
instance yields a receipt (log_queue) and an instance event
(dicom_image_queue), each series a state event (dicom_state_queue), each
study an audit event (audit_queue), with the keys the real producers use.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from dicomflow.audit.events import instances_transferred
from dicomflow.dicom.constants import EXPLICIT_VR_LE
from dicomflow.models import (
    DicomImageMeta,
    DicomStateMeta,
    DicomStoreMeta,
    encode,
    uid_hash,
)

_ROOT = "1.2.826.0.1.3680043.10.1137"
_MODALITIES = ("CT", "MR", "CR", "US", "DX")


@dataclass(frozen=True)
class Traffic:
    """Messages per topic attribute (``log``, ``dicom_state``, ``dicom_image``, ``audit``): (key, value) pairs."""

    messages: dict[str, list[tuple[bytes, bytes]]]
    instances: int
    series: int
    studies: int

    def count(self) -> int:
        return sum(len(v) for v in self.messages.values())


def _uid(*parts: int) -> str:
    return ".".join([_ROOT, *map(str, parts)])


def instance_messages(
    run: int, study: int, series: int, instance: int, *, tenant: str = "tenant-a",
    updated: dt.datetime | None = None,
) -> tuple[DicomStoreMeta, DicomImageMeta]:
    """One instance's receipt and instance event (deterministic UIDs from the numbers)."""
    when = updated or dt.datetime(2025, 3, 4, 10, 0, 0, 123456) + dt.timedelta(seconds=instance)
    study_uid, series_uid = _uid(run, study), _uid(run, study, series)
    sop_uid = _uid(run, study, series, instance)
    patient = f"P{run}-{study}"
    store = DicomStoreMeta(
        trace_id=str(uuid.uuid4()), worker_node_id="synthetic", tenant_id=tenant, patient_id=patient,
        study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid, file_size=500_000 + instance,
        file_path=f"/srv/dicom/{tenant}/20250304/{study_uid}/{series_uid}/{sop_uid}.dcm",
        transfer_syntax_uid=EXPLICIT_VR_LE, number_of_frames=1, created_time=when,
        series_uid_hash=uid_hash(series_uid), study_uid_hash=uid_hash(study_uid),
        accession_number=f"A{study}" if study % 3 else None, target_ts=EXPLICIT_VR_LE,
        study_date=dt.date(2025, 3, 1 + study % 28), transfer_status="NoNeedTransfer",
        source_ip="127.0.0.1", source_ae=f"MOD{series % 4}",
    )
    image = DicomImageMeta(
        tenant_id=tenant, patient_id=patient, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid,
        study_uid_hash=store.study_uid_hash, series_uid_hash=store.series_uid_hash, instance_number=instance,
        content_date=store.study_date, content_time=dt.time(10, 0, 0, 500000), image_type="ORIGINAL\\PRIMARY\\AXIAL",
        image_orientation_patient="1\\0\\0\\0\\1\\0", image_position_patient=f"0\\0\\{instance}",
        slice_thickness=1.25, spacing_between_slices=None, slice_location=float(instance), samples_per_pixel=1,
        photometric_interpretation="MONOCHROME2", width=512, columns=512, bits_allocated=16, bits_stored=12,
        high_bit=11, pixel_representation=0, rescale_intercept=-1024.0, rescale_slope=1.0, rescale_type="HU",
        window_center="40", window_width="400", transfer_syntax_uid=EXPLICIT_VR_LE,
        pixel_data_location=None, thumbnail_location=None, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        image_status="ACTIVE", space_size=store.file_size, created_time=when, updated_time=when,
    )
    return store, image


def state_message(
    run: int, study: int, series: int, *, instances: int, tenant: str = "tenant-a",
    updated: dt.datetime | None = None, description: str | None = None,
) -> DicomStateMeta:
    """One series' state event."""
    when = updated or dt.datetime(2025, 3, 4, 10, 0, 0, 123456)
    study_uid, series_uid = _uid(run, study), _uid(run, study, series)
    return DicomStateMeta(
        tenant_id=tenant, patient_id=f"P{run}-{study}", study_uid=study_uid, series_uid=series_uid,
        study_uid_hash=uid_hash(study_uid), series_uid_hash=uid_hash(series_uid),
        study_date_origin=f"202503{1 + study % 28:02d}", patient_name="Synthetic^Patient", patient_sex="O",
        patient_birth_date=None, patient_birth_time=None, patient_age="042Y", patient_size=None, patient_weight=70.5,
        study_date=dt.date(2025, 3, 1 + study % 28), study_time=dt.time(9, 30), accession_number=f"A{study}",
        study_id=str(study), study_description="Synthetic study", modality=_MODALITIES[series % len(_MODALITIES)],
        series_number=series, series_date=None, series_time=None,
        series_description=description or f"Series {series}", body_part_examined="CHEST", protocol_name=None,
        series_related_instances=instances, created_time=when, updated_time=when,
    )


def traffic(instances: int, *, series_size: int = 50, series_per_study: int = 4, run: int | None = None) -> Traffic:
    """``instances`` instances' worth of messages on the four topics (run number makes UIDs unique)."""
    run = run if run is not None else uuid.uuid4().int % 1_000_000_000
    out: dict[str, list[tuple[bytes, bytes]]] = {"log": [], "dicom_state": [], "dicom_image": [], "audit": []}
    n_series = 0
    n_studies = 0
    done = 0
    for study, series, size in _layout(instances, series_size, series_per_study):
        if series == 0:
            n_studies += 1
        n_series += 1
        for i in range(size):
            store, image = instance_messages(run, study, series, i)
            out["log"].append((store.trace_id.encode(), encode(store)))
            out["dicom_image"].append((image.key().encode(), encode(image)))
        st = state_message(run, study, series, instances=size)
        out["dicom_state"].append((st.key().encode(), encode(st)))
        if series == 0:
            ev = instances_transferred(
                node_id="synthetic", tenant_id="tenant-a", study_uid=_uid(run, study), instance_count=size,
                source_ae="MOD0", when=dt.datetime(2025, 3, 4, 10, 0, 0, 1000 + study),
            )
            out["audit"].append((b"tenant-a", encode(ev)))
        done += size
    return Traffic(out, done, n_series, n_studies)


def _layout(instances: int, series_size: int, series_per_study: int) -> Iterator[tuple[int, int, int]]:
    left = instances
    study = 0
    while left > 0:
        for series in range(series_per_study):
            if left <= 0:
                break
            size = min(series_size, left)
            yield study, series, size
            left -= size
        study += 1


__all__ = ["Traffic", "instance_messages", "state_message", "traffic"]
