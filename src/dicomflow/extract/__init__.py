"""DICOM header -> series-state and instance records.

:func:`extract_file` is the entry point; :class:`Extracted` its result.
"""

from dicomflow.extract.header import Extracted, extract_file

__all__ = ["Extracted", "extract_file"]
