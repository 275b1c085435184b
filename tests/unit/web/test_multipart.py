"""The incremental multipart/related reader STOW-RS spools bodies with: any chunking gives the same parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomflow.web import multipart
from dicomflow.web.multipart import MAX_HEADER_BYTES, MultipartError, MultipartSpooler, boundary_of

BOUNDARY = "b0undary-42"


def _body(*parts: tuple[dict[str, str], bytes], preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    out = bytearray(preamble)
    for headers, data in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        out += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n"
        out += data + b"\r\n"
    out += f"--{BOUNDARY}--".encode() + epilogue
    return bytes(out)


def _spool(tmp_path: Path, body: bytes, chunk: int | None = None) -> MultipartSpooler:
    spooler = MultipartSpooler(BOUNDARY, tmp_path)
    size = chunk or len(body) or 1
    try:
        for start in range(0, len(body), size):
            spooler.feed(body[start:start + size])
    finally:
        spooler.close()
    return spooler


PARTS = (
    ({"Content-Type": "application/dicom"}, b"DICM" + bytes(range(256)) * 40),
    # "--boundary" inside a part without a CRLF before it is not a delimiter.
    ({"Content-Type": "application/dicom", "Content-Location": "x"}, b"x--" + BOUNDARY.encode() + b"\r\n\r"),
    ({"Content-Type": "application/octet-stream"}, b""),
)


@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 7, len(BOUNDARY) + 3, 1000])
def test_every_chunking_gives_the_same_parts(tmp_path: Path, chunk: int | None) -> None:
    spooler = _spool(tmp_path, _body(*PARTS, preamble=b"ignored preamble\r\n", epilogue=b"\r\nignored"), chunk)
    assert spooler.complete
    assert [p.path.read_bytes() for p in spooler.parts] == [data for _, data in PARTS]
    assert [p.size for p in spooler.parts] == [len(data) for _, data in PARTS]
    assert [p.content_type for p in spooler.parts] == ["application/dicom", "application/dicom",
                                                       "application/octet-stream"]
    assert spooler.parts[1].headers == {"content-type": "application/dicom", "content-location": "x"}
    assert [p.path.name for p in spooler.parts] == ["part-00001", "part-00002", "part-00003"]


def test_a_body_cut_before_the_close_delimiter_is_not_complete(tmp_path: Path) -> None:
    body = _body(*PARTS)
    spooler = _spool(tmp_path, body[:-len(f"--{BOUNDARY}--") - 2])
    assert not spooler.complete
    assert len(spooler.parts) == 3
    assert spooler.parts[0].path.read_bytes() == PARTS[0][1]
    assert spooler.parts[2].size == 0  # the last body's end is held back until the delimiter shows


def test_bytes_after_the_close_delimiter_are_ignored(tmp_path: Path) -> None:
    spooler = MultipartSpooler(BOUNDARY, tmp_path)
    spooler.feed(_body(PARTS[0]))
    spooler.feed(f"--{BOUNDARY}\r\n\r\nmore".encode())
    spooler.close()
    assert spooler.complete and len(spooler.parts) == 1


def test_transport_padding_a_part_without_headers_and_folded_headers(tmp_path: Path) -> None:
    body = (f"--{BOUNDARY} \t\r\n\r\nno headers\r\n--{BOUNDARY}\r\nContent-Type: application/dicom;\r\n"
            f' transfer-syntax="1.2.840.10008.1.2.1"\r\n\r\ndata\r\n--{BOUNDARY}--\r\n').encode()
    spooler = _spool(tmp_path, body, 5)
    assert spooler.complete
    assert spooler.parts[0].headers == {} and spooler.parts[0].path.read_bytes() == b"no headers"
    assert spooler.parts[1].content_type == 'application/dicom; transfer-syntax="1.2.840.10008.1.2.1"'


@pytest.mark.parametrize(("body", "reason"), [
    (f"--{BOUNDARY}X\r\n\r\n".encode(), "not followed by a line break"),
    (f"--{BOUNDARY}\r\nno colon here\r\n\r\n".encode(), "malformed part header line"),
    (f"--{BOUNDARY}\r\n: empty name\r\n\r\n".encode(), "malformed part header line"),
    (f"--{BOUNDARY}\r\nX-Long: {'a' * MAX_HEADER_BYTES}\r\n\r\n".encode(), "part headers longer than"),
    (f"--{BOUNDARY}\r\nX-Long: {'a' * MAX_HEADER_BYTES}".encode(), "part headers longer than"),  # unterminated
])
def test_malformed_bodies_are_refused_with_a_reason(tmp_path: Path, body: bytes, reason: str) -> None:
    with pytest.raises(MultipartError, match=reason):
        _spool(tmp_path, body, 4096)


def test_the_part_count_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart, "MAX_PARTS", 2)
    with pytest.raises(MultipartError, match="more than 2 parts"):
        _spool(tmp_path, _body(*PARTS))


def test_the_preamble_is_not_kept_in_memory(tmp_path: Path) -> None:
    spooler = MultipartSpooler(BOUNDARY, tmp_path)
    for _ in range(100):
        spooler.feed(b"x" * 10_000)
    assert len(spooler._buffer) < len(BOUNDARY) + 2
    spooler.feed(_body(PARTS[0]))
    spooler.close()
    assert spooler.complete and spooler.parts[0].path.read_bytes() == PARTS[0][1]


@pytest.mark.parametrize(("header", "boundary"), [
    (f'multipart/related; type="application/dicom"; boundary={BOUNDARY}', BOUNDARY),
    ('multipart/related; boundary="with space"; type=x', "with space"),
    ("multipart/related;BOUNDARY=abc", "abc"),
])
def test_the_boundary_parameter(header: str, boundary: str) -> None:
    assert boundary_of(header) == boundary


@pytest.mark.parametrize("header", ["multipart/related", 'multipart/related; boundary=""',
                                    "multipart/related; boundary=" + "a" * 71,
                                    'multipart/related; boundary="' + "a" * 71 + '"'])
def test_a_content_type_without_a_usable_boundary_is_refused(header: str) -> None:
    """Longer than RFC 2046's 70 characters is refused, not cut to 70 (which no delimiter would then match)."""
    with pytest.raises(MultipartError, match="no boundary"):
        boundary_of(header)
