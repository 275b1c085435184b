"""STOW-RS bodies for the web fuzz phase: good, damaged, lying and oversized ``multipart/related`` requests.

Every instance in a body has SOP Instance UIDs of its own (drawn from the
request's seed), so after the run each UID tells its story: answered
Success (it must be indexed), refused (it must not be), or never answered
for (the whole request was refused: it must not be indexed either).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

from dicomflow_faults.instances import Template, make_uid

#: The largest 32-bit length field (a length, not DICOM's undefined-length marker, though it is the same bytes).
_MAX_U32 = (1 << 32) - 1
#: STOW body families (the request family is ``stow-<family>``).
FAMILIES = ("good", "mixed", "truncated", "wrong-boundary", "bad-content-type", "part-headers", "lying-part10",
            "oversize", "oversize-chunked", "empty")


@dataclass
class Body:
    """One STOW-RS request body and what it carries."""

    content_type: str
    data: bytes
    #: SOP Instance UIDs of the well-formed instances inside (those that may be answered Success).
    sop_uids: list[str] = field(default_factory=list)
    #: SOP Instance UIDs of damaged instances (must never be answered Success or indexed).
    damaged_uids: list[str] = field(default_factory=list)
    chunked: bool = False
    #: Content-Length to declare instead of the true length (None: the true one).
    declared_length: int | None = None


class BodyMaker:
    """Builds bodies from one instance template; every UID fresh (``run`` is the phase's)."""

    def __init__(self, template: Template, run: int, study_uid: str, max_stow_bytes: int) -> None:
        self.template = template
        self.run = run
        self.study_uid = study_uid
        self.max_stow_bytes = max_stow_bytes

    def instance(self, rng: random.Random, counter: int | None = None) -> tuple[str, bytes]:
        """(SOP UID, Part 10 bytes) of a new good instance in the phase's study."""
        n = counter if counter is not None else rng.randrange(10**9)
        sop = make_uid(self.run, 3, n)
        series = make_uid(self.run, 2, n % 7)
        return sop, self.template.fill(study_uid=self.study_uid, series_uid=series, sop_uid=sop,
                                       patient_id=f"FZ{self.run}{n % 1000:06d}", accession=f"FA{self.run}{n % 1000:06d}",
                                       series_number=n % 7, instance_number=n % 100000)

    def body(self, family: str, rng: random.Random) -> Body:
        boundary = f"fuzz{rng.randrange(1 << 48):x}"
        ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
        if family == "good":
            pairs = [self.instance(rng) for _ in range(rng.randint(1, 3))]
            return Body(ctype, multipart(boundary, [d for _, d in pairs]), [u for u, _ in pairs])
        if family == "mixed":
            return self._mixed(rng, boundary, ctype)
        if family == "truncated":
            uid, data = self.instance(rng)
            whole = multipart(boundary, [data])
            return Body(ctype, whole[: rng.randrange(1, len(whole) - 2)], damaged_uids=[uid])
        if family == "wrong-boundary":
            uid, data = self.instance(rng)
            other = rng.choice([boundary + "x", boundary[:-1], boundary.upper(), "-" + boundary, ""])
            return Body(f'multipart/related; type="application/dicom"; boundary={other}' if other else
                        'multipart/related; type="application/dicom"', multipart(boundary, [data]), damaged_uids=[uid])
        if family == "bad-content-type":
            uid, data = self.instance(rng)
            bad = rng.choice(["application/dicom", "multipart/form-data; boundary=" + boundary,
                              f'multipart/related; type="application/json"; boundary={boundary}', "",
                              f"multipart/related; boundary={'b' * 300}", "multipart/related; boundary=\"\"",
                              f"multipart/related; type=application/dicom; boundary=\"{boundary}", "text/plain\u00e9"])
            return Body(bad, multipart(boundary, [data]), damaged_uids=[uid])
        if family == "part-headers":
            return self._part_headers(rng, boundary, ctype)
        if family == "lying-part10":
            uid, data = self.instance(rng)
            return Body(ctype, multipart(boundary, [lie_about_length(data, rng)]), damaged_uids=[uid])
        if family in ("oversize", "oversize-chunked"):
            pairs = [self.instance(rng)]
            filler = rng.randbytes(self.max_stow_bytes + rng.randint(1, 4096))
            data = multipart(boundary, [pairs[0][1], filler])
            return Body(ctype, data, damaged_uids=[pairs[0][0]], chunked=family == "oversize-chunked")
        return Body(ctype, rng.choice([b"", f"--{boundary}--\r\n".encode(), b"\r\n" * 10]))

    def _mixed(self, rng: random.Random, boundary: str, ctype: str) -> Body:
        good = [self.instance(rng) for _ in range(rng.randint(1, 2))]
        damaged_uid, damaged = self.instance(rng)
        bad = rng.choice([damaged[: rng.randrange(10, len(damaged))], rng.randbytes(rng.randint(0, 600)),
                          lie_about_length(damaged, rng)])
        parts = [d for _, d in good] + [bad]
        rng.shuffle(parts)
        headers = {id(bad): rng.choice(["application/dicom", "application/octet-stream", "text/plain"])}
        return Body(ctype, multipart(boundary, parts, headers), [u for u, _ in good], [damaged_uid])

    def _part_headers(self, rng: random.Random, boundary: str, ctype: str) -> Body:
        uid, data = self.instance(rng)
        raw = rng.choice([
            b"Content-Type: application/dicom\r\nX: " + b"h" * 20000 + b"\r\n",   # headers past the bound
            b"no colon here\r\n", b"\xff\xfe\x00garbage: \x01\r\n", b"Content-Type:\r\n",
            b"Content-Type: application/dicom\r\n continued\r\n", b"",
        ])
        body = b"--" + boundary.encode() + b"\r\n" + raw + b"\r\n" + data + b"\r\n--" + boundary.encode() + b"--\r\n"
        return Body(ctype, body, damaged_uids=[uid])


def multipart(boundary: str, parts: list[bytes], types: dict[int, str] | None = None) -> bytes:
    out = bytearray()
    for part in parts:
        ctype = (types or {}).get(id(part), "application/dicom")
        out += f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode() + part + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def lie_about_length(data: bytes, rng: random.Random) -> bytes:
    """A Part 10 file whose length fields say what is not so (group length, an element's length, cut short)."""
    out = bytearray(data)
    choice = rng.randrange(4)
    if choice == 0:  # (0002,0000) File Meta Information Group Length: its UL value just after the preamble's tag
        at = 132 + 8
        out[at:at + 4] = struct.pack("<I", rng.choice([0, 1, _MAX_U32, len(data) * 4, rng.randrange(1 << 32)]))
        return bytes(out)
    pixel = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data: OW, 2 reserved bytes, then a 4-byte length
    if choice == 1 and pixel > 0:
        out[pixel + 8:pixel + 12] = struct.pack("<I", rng.choice([_MAX_U32 - 1, len(data) * 10, _MAX_U32]))
        return bytes(out)
    if choice == 2 and pixel > 0:  # the file ends in the middle of the pixel data
        return bytes(out[: pixel + 12 + rng.randrange(0, 100)])
    for _ in range(rng.randint(1, 4)):  # a 16-bit element length somewhere in the data set
        at = rng.randrange(140, max(141, pixel if pixel > 0 else len(out) - 2))
        out[at:at + 2] = struct.pack("<H", rng.choice([0, 1, 0xFFFF, rng.randrange(1 << 16)]))
    return bytes(out)


__all__ = ["FAMILIES", "Body", "BodyMaker", "lie_about_length", "multipart"]
