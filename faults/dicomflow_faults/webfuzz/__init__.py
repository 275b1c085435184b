"""The web fuzz phase (``--web-fuzz N``): mutated HTTP requests against ``dicomflow web``, as protofuzz does for DICOM.

- :mod:`.requests`: the requests, from the app's own route list and a seed;
- :mod:`.bodies`: STOW-RS bodies (damaged multipart, lying Part 10, oversized);
- :mod:`.tokens`: bearer tokens, good and of every refused kind (keys made at run time);
- :mod:`.client`: one exchange over a raw loopback socket;
- :mod:`.verdict`: the figures and checks; :mod:`.run`: the phase.
"""

from dicomflow_faults.webfuzz.run import run_web_fuzz
from dicomflow_faults.webfuzz.verdict import WebFuzzResult

__all__ = ["WebFuzzResult", "run_web_fuzz"]
