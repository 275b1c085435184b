"""Image workers (``dicomflow images``): series thumbnails and NeedTransfer copies from dicom_image_queue.

This package imports nothing heavy on purpose (the CLI imports it for
``--help``); :mod:`dicomflow.images.worker` is the worker.
"""
