-- 0003: what the image workers (dicomflow images) record.
--
-- transfer_status 'Failed' says a NeedTransfer instance could not be
-- transcoded; transfer_reason says why (NULL otherwise). Not a wire-format
-- field: receipts on log_queue keep the reference's shape.
ALTER TABLE dicom_object_meta ADD COLUMN transfer_reason varchar(1024);
