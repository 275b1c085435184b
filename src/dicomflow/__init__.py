"""dicomflow: DICOM metadata through Apache Kafka into PostgreSQL and analytics warehouses."""

__version__ = "0.1.0"
