-- 0004: the change log (issue 20): one row per change of an instance, in commit order.
--
-- sequence: an identity, so monotonic but gap-tolerant (a rolled-back
-- transaction burns its numbers). Writers take one transaction advisory lock
-- (see dicomflow.store.changes.CHANGE_LOG_LOCK) just before they insert here
-- and hold it to their commit, so rows become visible in sequence order: a
-- reader that has seen sequence N will never later see a row below N appear.
-- action: create (a new instance row), update (an instance row changed by a
-- re-sent instance, ingest.duplicates = "replace"), delete.
-- state: of the instance this row speaks of, kept current: the newest row of
-- an instance that exists is 'current', older ones 'replaced'; every row of
-- a deleted instance 'deleted' (a re-stored instance starts again with a
-- 'current' create).
-- Not a wire-format table: the change events on dicom_change_queue are
-- built from it, the other topics keep the reference's shape.
CREATE TABLE dicom_change_log (
    sequence     bigint       GENERATED ALWAYS AS IDENTITY,
    tenant_id    varchar(64)  NOT NULL,
    study_uid    varchar(64)  NOT NULL,
    series_uid   varchar(64)  NOT NULL,
    sop_uid      varchar(64)  NOT NULL,
    action       varchar(8)   NOT NULL
        CONSTRAINT dicom_change_log_action_check CHECK (action IN ('create', 'update', 'delete')),
    state        varchar(8)   NOT NULL
        CONSTRAINT dicom_change_log_state_check CHECK (state IN ('current', 'replaced', 'deleted')),
    -- clock_timestamp(), not now(): taken at the insert, under the change-log
    -- lock, so timestamps grow with sequence (now() is the transaction's start,
    -- and a transaction that started first may commit last).
    timestamp    timestamptz  NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT dicom_change_log_pkey PRIMARY KEY (sequence)
);

-- The change feed of one tenant, in sequence order (GET /changefeed).
CREATE INDEX dicom_change_log_tenant_idx ON dicom_change_log (tenant_id, sequence);
-- Its time windows (startTime / endTime).
CREATE INDEX dicom_change_log_time_idx ON dicom_change_log (tenant_id, timestamp);
-- The rows of one instance / series / study: their state is updated on update and delete.
CREATE INDEX dicom_change_log_instance_idx ON dicom_change_log (tenant_id, study_uid, series_uid, sop_uid);

-- How far the change publisher (dicom_change_queue) got: one row per publisher name.
CREATE TABLE dicom_change_outbox (
    publisher    varchar(64)  NOT NULL,
    sequence     bigint       NOT NULL,
    updated_at   timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT dicom_change_outbox_pkey PRIMARY KEY (publisher)
);

-- What a delete leaves for the purge worker (dicomflow purge): the objects its
-- index rows named, one row per deleted instance, written in the delete's
-- transaction and removed once the objects are gone. sequence is the delete's
-- change-log row; not_before = the delete's time + lifecycle.purge_delay.
CREATE TABLE dicom_purge_queue (
    sequence     bigint       NOT NULL,
    tenant_id    varchar(64)  NOT NULL,
    study_uid    varchar(64)  NOT NULL,
    series_uid   varchar(64)  NOT NULL,
    sop_uid      varchar(64)  NOT NULL,
    locations    text[]       NOT NULL,
    not_before   timestamptz  NOT NULL,
    -- The deleted dicom_image_meta row (its JSON is the wire format's): the purge
    -- republishes it with image_status 'DELETED' so the warehouse marks it.
    image        jsonb,
    -- The deleted receipts of the instance (dicomflow undelete puts them back).
    receipts     jsonb,
    -- On one row per series the delete emptied: its last state row (count 0).
    series_state jsonb,
    CONSTRAINT dicom_purge_queue_pkey PRIMARY KEY (sequence)
);
CREATE INDEX dicom_purge_queue_due_idx ON dicom_purge_queue (not_before, sequence);
