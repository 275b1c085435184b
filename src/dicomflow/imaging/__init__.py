"""Pixel work shared by the DICOMweb server and the image workers: rendering and transcoding.

- :mod:`~dicomflow.imaging.render`: one frame as JPEG / PNG (windowing, MONOCHROME1, colour);
- :mod:`~dicomflow.imaging.transcode`: an instance re-encoded in another transfer syntax.

A floor below ``web/`` and ``images/``: both stages use the same functions,
so a thumbnail pre-built by ``dicomflow images`` is the one ``…/thumbnail``
would render, and a pre-transcoded copy holds the bytes WADO-RS would make.
"""
