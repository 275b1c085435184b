-- 0005: trigram indexes for the QIDO-RS text keys that viewers search with wildcards on both sides.
--
-- OHIF's study list (supportsWildcard) sends PatientID=*123*, AccessionNumber=*A1*
-- and StudyDescription=*CHEST*; a btree cannot serve a leading wildcard, so each
-- would read every series row of the tenant. pg_trgm (created by 0002) serves
-- LIKE / ILIKE with any wildcard; the btrees of 0001 / 0002 keep the exact and
-- prefix matches. (Numbered 0005: 0004 is the change log's.)
-- Measured on 200,000 series rows: AccessionNumber=*1234* 24 ms (179 ms without),
-- PatientID=*4321* 9 ms (172 ms); inserting 500 new series 227 ms (140 ms without
-- these three). A very common description fragment can be slower through the index
-- than a scan (the planner decides from the column's statistics).
CREATE INDEX dicom_state_meta_patient_id_trgm_idx ON dicom_state_meta USING gin (patient_id gin_trgm_ops);
CREATE INDEX dicom_state_meta_accession_trgm_idx ON dicom_state_meta USING gin (accession_number gin_trgm_ops);
CREATE INDEX dicom_state_meta_study_description_trgm_idx ON dicom_state_meta USING gin (study_description gin_trgm_ops);
