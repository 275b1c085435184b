"""Ingest from folders: find DICOM files by content and publish their store events.

- :mod:`~dicomflow.scanner.walk`: which files are DICOM (by their bytes);
- :mod:`~dicomflow.scanner.publish`: copy (optionally) and publish, with a summary;
- ``dicomflow publish`` itself is :mod:`dicomflow.cli.publish`.
"""
