"""Ingest from folders: find DICOM files by content and publish their store events.

- :mod:`~dicomflow.scanner.walk`: which files are DICOM (by their bytes);
- :mod:`~dicomflow.scanner.decide`: the consumer's rule applied up front (copy in, in place, or refuse);
- :mod:`~dicomflow.scanner.publish`: copy (files from outside the storage root) and publish, with a summary;
- ``dicomflow publish`` itself is :mod:`dicomflow.cli.publish`.
"""
