-- 0001: the three tables of the archive index, as the reference schema.
--
-- Column names are the JSON field names of the wire format; types follow
-- str(N) -> varchar(N), date -> date, time -> time, datetime -> timestamp,
-- float -> double precision, int -> integer, int64 -> bigint, and a column is
-- nullable exactly when the field may be null. tests/integration/test_store.py
-- derives the expected columns from the msgspec models, so a model change
-- without a migration fails there.

-- Receipt records: one row per store event (DicomStoreMeta).
CREATE TABLE dicom_object_meta (
    trace_id            varchar(36)  NOT NULL,
    worker_node_id      varchar(64)  NOT NULL,
    tenant_id           varchar(64)  NOT NULL,
    patient_id          varchar(64)  NOT NULL,
    study_uid           varchar(64)  NOT NULL,
    series_uid          varchar(64)  NOT NULL,
    sop_uid             varchar(64)  NOT NULL,
    file_size           bigint       NOT NULL,
    file_path           varchar(512) NOT NULL,
    transfer_syntax_uid varchar(64)  NOT NULL,
    number_of_frames    integer      NOT NULL,
    created_time        timestamp    NOT NULL,
    series_uid_hash     varchar(20)  NOT NULL,
    study_uid_hash      varchar(20)  NOT NULL,
    accession_number    varchar(16),
    target_ts           varchar(64)  NOT NULL,
    study_date          date         NOT NULL,
    transfer_status     varchar(16)  NOT NULL
        CONSTRAINT dicom_object_meta_transfer_status_check
        CHECK (transfer_status IN ('NoNeedTransfer', 'Success', 'Failed', 'NeedTransfer')),
    source_ip           varchar(24)  NOT NULL,
    source_ae           varchar(64)  NOT NULL,
    CONSTRAINT dicom_object_meta_pkey PRIMARY KEY (trace_id)
);

-- Receipts of one series / instance (audit questions: "when did this arrive, from whom").
CREATE INDEX dicom_object_meta_series_idx ON dicom_object_meta (tenant_id, study_uid, series_uid);

-- Series state: one row per series (DicomStateMeta).
CREATE TABLE dicom_state_meta (
    tenant_id                varchar(64)  NOT NULL,
    patient_id               varchar(64)  NOT NULL,
    study_uid                varchar(64)  NOT NULL,
    series_uid               varchar(64)  NOT NULL,
    study_uid_hash           varchar(20)  NOT NULL,
    series_uid_hash          varchar(20)  NOT NULL,
    study_date_origin        varchar(8)   NOT NULL,
    patient_name             varchar(64),
    patient_sex              varchar(1),
    patient_birth_date       date,
    patient_birth_time       time,
    patient_age              varchar(16),
    patient_size             double precision,
    patient_weight           double precision,
    study_date               date         NOT NULL,
    study_time               time,
    accession_number         varchar(16),
    study_id                 varchar(16),
    study_description        varchar(64),
    modality                 varchar(16),
    series_number            integer,
    series_date              date,
    series_time              time,
    series_description       varchar(256),
    body_part_examined       varchar(64),
    protocol_name            varchar(64),
    series_related_instances integer,
    created_time             timestamp    NOT NULL,
    updated_time             timestamp    NOT NULL,
    CONSTRAINT dicom_state_meta_pkey PRIMARY KEY (tenant_id, study_uid, series_uid)
);

-- DICOMweb (QIDO-RS) lookups: studies of a patient, by date, by accession number.
-- Study UID lookups use the primary key's prefix (tenant_id, study_uid).
CREATE INDEX dicom_state_meta_patient_idx ON dicom_state_meta (tenant_id, patient_id);
CREATE INDEX dicom_state_meta_study_date_idx ON dicom_state_meta (tenant_id, study_date);
CREATE INDEX dicom_state_meta_accession_idx ON dicom_state_meta (tenant_id, accession_number);

-- Instances: one row per SOP instance (DicomImageMeta). The primary key's
-- prefix (tenant_id, study_uid, series_uid) serves the per-series instance
-- count (series_related_instances) and the WADO-RS series / instance lookups.
CREATE TABLE dicom_image_meta (
    tenant_id                  varchar(64)  NOT NULL,
    patient_id                 varchar(64)  NOT NULL,
    study_uid                  varchar(64)  NOT NULL,
    series_uid                 varchar(64)  NOT NULL,
    sop_uid                    varchar(64)  NOT NULL,
    study_uid_hash             varchar(20)  NOT NULL,
    series_uid_hash            varchar(20)  NOT NULL,
    instance_number            integer,
    content_date               date,
    content_time               time,
    image_type                 varchar(128),
    image_orientation_patient  varchar(128),
    image_position_patient     varchar(64),
    slice_thickness            double precision,
    spacing_between_slices     double precision,
    slice_location             double precision,
    samples_per_pixel          integer,
    photometric_interpretation varchar(32),
    width                      integer,
    columns                    integer,
    bits_allocated             integer,
    bits_stored                integer,
    high_bit                   integer,
    pixel_representation       integer,
    rescale_intercept          double precision,
    rescale_slope              double precision,
    rescale_type               varchar(64),
    window_center              varchar(64),
    window_width               varchar(64),
    transfer_syntax_uid        varchar(64)  NOT NULL,
    pixel_data_location        varchar(512),
    thumbnail_location         varchar(512),
    sop_class_uid              varchar(64)  NOT NULL,
    image_status               varchar(32),
    space_size                 bigint,
    created_time               timestamp    NOT NULL,
    updated_time               timestamp    NOT NULL,
    CONSTRAINT dicom_image_meta_pkey PRIMARY KEY (tenant_id, study_uid, series_uid, sop_uid)
);
