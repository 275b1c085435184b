-- 0002: indexes for the DICOMweb server's searches (QIDO-RS) and retrievals (WADO-RS).
--
-- pg_trgm is a trusted extension (PostgreSQL 13+): the database owner may
-- create it. Its GIN operator class serves LIKE / ILIKE with a leading
-- wildcard, which a btree (text_pattern_ops) cannot: PatientName=*SMITH* and
-- PatientName=smi* both use dicom_state_meta_patient_name_trgm_idx.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE INDEX dicom_state_meta_patient_name_trgm_idx ON dicom_state_meta USING gin (patient_name gin_trgm_ops);
-- Patient ID prefixes (PatientID=ABC*) and exact matches in one btree.
CREATE INDEX dicom_state_meta_patient_pattern_idx ON dicom_state_meta (tenant_id, patient_id text_pattern_ops);
-- Series by modality (Modality=CT, ModalitiesInStudy=CT).
CREATE INDEX dicom_state_meta_modality_idx ON dicom_state_meta (tenant_id, modality);
-- SeriesInstanceUID without its study (GET /series?SeriesInstanceUID=...).
CREATE INDEX dicom_state_meta_series_uid_idx ON dicom_state_meta (tenant_id, series_uid);
-- SOPInstanceUID without its study or series (GET /instances?SOPInstanceUID=...).
CREATE INDEX dicom_image_meta_sop_uid_idx ON dicom_image_meta (tenant_id, sop_uid);
-- The newest receipt of an instance: where its file is (WADO-RS).
CREATE INDEX dicom_object_meta_instance_idx
    ON dicom_object_meta (tenant_id, study_uid, series_uid, sop_uid, created_time DESC);
