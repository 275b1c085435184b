"""The one DICOM layer: everything that reads or writes encoded DICOM bytes.

- :mod:`~dicomflow.dicom.constants`: transfer syntaxes and their properties,
  VR sets, the undefined length and delimiters, the tags dicomflow reads;
- :mod:`~dicomflow.dicom.part10`: preamble, ``DICM``, the file meta group,
  and telling a DICOM file from anything else;
- :mod:`~dicomflow.dicom.walker`: the one element walker (over a file or
  bytes; truncation with byte offsets), reading through
  :mod:`~dicomflow.dicom.window` and skipping nested sequences and items
  with :mod:`~dicomflow.dicom.sequences`;
- :mod:`~dicomflow.dicom.general`: pydicom, for what the walker declines;
- :mod:`~dicomflow.dicom.reader`: the readability verdict the consumer and
  ingest share;
- :mod:`~dicomflow.dicom.values`: the one value decoder (dates, times,
  numbers, text by Specific Character Set);
- :mod:`~dicomflow.dicom.derived`: the values ingest and the consumer both
  derive (UIDs, study date, patient ID, frames, tenant tag), one function each.

Nothing here is imported eagerly: the receiver and the publisher import the
light modules (constants, part10) without paying for pydicom.
"""
