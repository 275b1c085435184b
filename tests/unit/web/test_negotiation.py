"""Accept headers -> what is sent: the frames' two forms, the JSON answers, and the 406 reasons."""

from __future__ import annotations

import pytest

from dicomflow.web.frames import _forms
from dicomflow.web.negotiation import NotAcceptable, describe, parse_accept, require

JPEG = "1.2.840.10008.1.2.4.50"
JLS = "1.2.840.10008.1.2.4.80"
HTJ2K = "1.2.840.10008.1.2.4.201"
MPEG4 = "1.2.840.10008.1.2.4.102"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
#: What OHIF's image loader (cornerstone's wadors loader) sends for every frame, quoted or not.
OHIF = ['multipart/related; type="application/octet-stream"; transfer-syntax=*',
        "multipart/related; type=application/octet-stream; transfer-syntax=*"]


@pytest.mark.parametrize("accept", OHIF)
@pytest.mark.parametrize("ts", [JPEG, JLS, HTJ2K])
def test_ohif_gets_compressed_frames_as_stored_labelled_octet_stream(accept: str, ts: str) -> None:
    assert _forms(ts, parse_accept(accept)) == ("application/octet-stream", True)


@pytest.mark.parametrize("accept", OHIF)
def test_ohif_gets_native_frames_native_and_a_video_is_not_cut_into_frames(accept: str) -> None:
    assert _forms(IMPLICIT, parse_accept(accept)) == (None, True)
    assert _forms(MPEG4, parse_accept(accept)) == (None, True)


@pytest.mark.parametrize(("accept", "expected"), [
    ('multipart/related; type="application/octet-stream"', (None, True)),  # no transfer-syntax: Explicit VR LE
    (f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT}', (None, True)),
    (f'multipart/related; type="application/octet-stream"; transfer-syntax={JPEG}', ("application/octet-stream", False)),
    (f'multipart/related; type="application/octet-stream"; transfer-syntax={JLS}', (None, False)),  # neither: 406
    ('multipart/related; type="image/jpeg"', ("image/jpeg", False)),
    (f'multipart/related; type="image/jpeg"; transfer-syntax={JPEG}', ("image/jpeg", False)),
    ('multipart/related; type="image/jls"', (None, False)),
    ("*/*", ("image/jpeg", True)),
    ('multipart/related; type="application/octet-stream", multipart/related; type="image/jpeg"; q=0.5',
     ("image/jpeg", True)),
])
def test_frames_of_a_jpeg_instance(accept: str, expected: tuple[str | None, bool]) -> None:
    assert _forms(JPEG, parse_accept(accept)) == expected


def test_require_takes_the_first_offered_type_the_header_accepts() -> None:
    offered = ("application/dicom+json", "application/json")
    assert require(None, offered, "x") == "application/dicom+json"
    assert require("application/json", offered, "x") == "application/json"
    assert require("application/*;q=0.5", offered, "x") == "application/dicom+json"
    with pytest.raises(NotAcceptable) as caught:
        require('multipart/related; type="application/dicom+xml"', offered, "a search's answer")
    assert str(caught.value) == ("the Accept header asks for application/dicom+xml; a search's answer is offered as "
                                 "application/dicom+json, application/json")


def test_describe_names_each_range_with_its_transfer_syntax() -> None:
    assert describe(parse_accept(f'multipart/related; type="image/jls"; transfer-syntax={JLS}, text/html;q=0.1')) == \
        f"image/jls; transfer-syntax={JLS}, text/html"
