"""DICOM header -> series-state and instance records."""
