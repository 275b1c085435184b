"""Hostile request values: control characters in the query or path, malformed Host headers, request text in headers.

Each class of bad value the web fuzz phase of the fault suite found (or
was written to find) has a case here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dicomflow.web.auth import Forbidden, Unauthorized
from dicomflow.web.qido import QueryError, parse
from dicomflow.web.validate import (
    RequestValidation,
    control_problem,
    header_text,
    host_problem,
    query_problem,
    request_problem,
)


@pytest.mark.parametrize("query", [
    b"PatientID=Smi%00h*",           # NUL: PostgreSQL text cannot hold it (was a 500, psycopg DataError)
    b"PatientID=a%0Ab",              # line feed
    b"PatientID=a%09b",              # tab
    b"AccessionNumber=%7F",          # DEL
    b"PatientName=%C2%85x",          # NEL, a C1 control (UTF-8 encoded)
    b"limit=10&PatientID=%1B[31m",   # escape, after a good parameter
])
def test_a_control_character_in_a_query_value_is_refused_naming_the_key(query: bytes) -> None:
    problem = query_problem(query)
    assert problem is not None
    key = query.rsplit(b"&", 1)[-1].split(b"=")[0].decode()
    assert problem.startswith(f"query parameter '{key}': the value contains the control character U+")


def test_a_control_character_in_a_query_name_is_refused_with_the_name_escaped() -> None:
    problem = query_problem(b"Patient%00ID=x")
    assert problem == "query parameter name 'Patient\\x00ID' contains the control character U+0000 at position 8"


@pytest.mark.parametrize("query", [b"", b"PatientID=Smith*", b"PatientName=M%C3%BCller", b"StudyDate=20240101-",
                                   b"PatientID=%FF%FE", b"a=b=c&&=", b"includefield=00100010,all"])
def test_ordinary_and_merely_odd_queries_pass(query: bytes) -> None:
    assert query_problem(query) is None  # invalid UTF-8 (%FF) becomes U+FFFD, not a control character


def test_control_problem_names_the_character_and_position() -> None:
    assert control_problem("abc") is None
    assert control_problem("M\u00fcller \u4e2d") is None
    assert control_problem("ab\x00") == "contains the control character U+0000 at position 3"
    assert control_problem("\x9b") == "contains the control character U+009B at position 1"


@pytest.mark.parametrize("host", ["", "localhost", "localhost:8080", "127.0.0.1:1", "pacs.example.org",
                                  "[::1]:8080", "[fe80::1]", "web_1:80"])
def test_well_formed_hosts_pass(host: str) -> None:
    assert host_problem(host) is None


@pytest.mark.parametrize("host", ["[", "[::1", "a b", "a/b", "a:b", "a:123456", "a@b", "\u00e9t\u00e9", 'x"y', "a:"])
def test_malformed_hosts_are_refused(host: str) -> None:
    problem = host_problem(host)
    assert problem is not None and "is not host[:port]" in problem


def _scope(path: str = "/studies", query: bytes = b"", host: bytes | None = b"localhost") -> dict[str, Any]:
    headers = [(b"host", host)] if host is not None else []
    return {"type": "http", "method": "GET", "path": path, "raw_path": path.encode("utf-8", "replace"),
            "query_string": query, "headers": headers}


def test_request_problem_looks_at_path_query_and_host() -> None:
    assert request_problem(_scope()) is None
    assert request_problem(_scope(host=None)) is None
    assert request_problem(_scope("/studies/1.2\x00.3/series")) == \
        "the path contains the control character U+0000 at position 13"
    assert (request_problem(_scope(query=b"PatientID=%00")) or "").startswith("query parameter 'PatientID'")
    assert (request_problem(_scope(host=b"[")) or "").startswith("the Host header '['")


def _call(app: Any, scope: dict[str, Any]) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body, start["headers"]


def test_the_middleware_answers_400_before_the_route_runs_and_passes_the_rest() -> None:
    reached: list[str] = []

    async def route(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = RequestValidation(route)
    status, body, _ = _call(app, _scope(query=b"PatientID=Smi%00h*"))
    assert status == 400 and reached == []
    assert body.startswith(b"query parameter 'PatientID': the value contains the control character U+0000")
    assert _call(app, _scope(query=b"PatientID=Smith*"))[0] == 204 and reached == ["/studies"]


@pytest.mark.parametrize("text", ['kid "\u4e2d\u6587"', "a\r\nSet-Cookie: x=1", "back\\slash", "x" * 500])
def test_header_text_is_printable_ascii_without_quotes_and_bounded(text: str) -> None:
    out = header_text(text)
    assert len(out) <= 200 and out.isascii() and out.isprintable() and '"' not in out and "\\" not in out
    out.encode("latin-1")  # what the server does with a header value


@pytest.mark.parametrize("error", [Unauthorized, Forbidden])
def test_auth_challenges_never_carry_request_text_unchecked(error: type[Unauthorized | Forbidden]) -> None:
    # PyJWT quotes parts of the token in its messages, e.g. an unknown kid
    exc = error("invalid token: no key with kid '\u4e2d\"\r\n' in the key set")
    challenge = (exc.headers or {})["WWW-Authenticate"]
    challenge.encode("latin-1")
    assert challenge.count('"') == 6 and "\r" not in challenge and "\n" not in challenge


@pytest.mark.parametrize("value", ["1_000", " 5", "+5", "\u0661\u0660", "5 ", "9" * 5000])
def test_limit_and_offset_take_ascii_digits_only(value: str) -> None:
    # int() takes all of these (or, for 5,000 digits, raises ValueError past Python's digit limit)
    for name in ("limit", "offset"):
        with pytest.raises(QueryError, match="is not an integer"):
            parse("study", [(name, value)])


def test_a_limit_over_max_limit_is_clamped_and_the_warning_holds_the_number_not_the_text() -> None:
    query = parse("study", [("limit", "0000000000000100000")], max_limit=50)
    assert query.filters.limit == 50
    assert query.warnings == ("limit 100000 exceeds what this server returns at once; 50 returned",)
    assert parse("study", [], max_limit=50).filters.limit == 50  # the default page never exceeds the cap
    assert parse("study", [("limit", "50")], max_limit=50).warnings == ()


@pytest.mark.parametrize("tag_path", ["7FE00010/1/2/3/4", "00100020/0/00100010", "00100020/x/1", "zz", "",
                                      "FFFFFFFFFFFF", "-1", "00081140/99/00081155"])
def test_a_bulk_data_path_that_leads_nowhere_is_404_not_500(tag_path: str) -> None:
    # 7FE00010/1/2/3/4 walked into Pixel Data's bytes: TypeError, answered 500 with a traceback
    from io import BytesIO

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    from starlette.exceptions import HTTPException

    from dicomflow.web.frames import _element

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.PatientID = "P1"
    ds.PixelData = b"\x00\x01" * 8
    ds.BitsAllocated = 16
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    with pytest.raises(HTTPException) as raised:
        _element(buf, tag_path)
    assert raised.value.status_code == 404


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # pydicom's, as it reads the bad values
def test_metadata_of_a_stored_value_its_vr_cannot_hold_leaves_the_value_out_instead_of_failing() -> None:
    # STOW-RS accepted a Part 10 file whose DS bytes read '800\xff' (a length that lied shifted them):
    # WADO-RS metadata of its whole study answered 500 (pydicom's to_json_dict: ValueError)
    from io import BytesIO

    from pydicom import dcmread
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from dicomflow.web.dicomjson import dataset_json

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.PatientID = "P1"
    ds.WindowWidth = "800"
    ds.InstanceNumber = "7"
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue().replace(b"800 ", b"800\xff").replace(b"7 ", b"x\xfe")
    doc = dataset_json(dcmread(BytesIO(data)), lambda path: path)
    assert doc["00281051"] == {"vr": "DS"} and doc["00200013"] == {"vr": "IS"}
    assert doc["00100020"] == {"vr": "LO", "Value": ["P1"]}


def _app_get(settings: Any, *requests: tuple[str, dict[str, str]]) -> list[Any]:
    import httpx
    from prometheus_client import CollectorRegistry

    from dicomflow.web.app import create_app

    app = create_app(settings, registry=CollectorRegistry(), publish_audit=False)

    async def get() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web") as client:
            return [await client.get(path, headers=headers) for path, headers in requests]

    return asyncio.run(get())


def _open_settings(tmp_path: Any, **viewer: Any) -> Any:
    import dataclasses

    from dicomflow.settings import load_settings

    base = load_settings(None, {}, {"web.auth": "none", "stack.dir": str(tmp_path / "stack"),
                                    "storage.root": str(tmp_path / "storage")})
    return dataclasses.replace(base, web=dataclasses.replace(
        base.web, viewer=dataclasses.replace(base.web.viewer, **viewer)))


def test_the_app_refuses_hostile_values_on_every_route_before_any_database_work(tmp_path: Any) -> None:
    # no PostgreSQL behind this app: a request that got past the middleware would fail differently
    answers = _app_get(_open_settings(tmp_path),
                       ("/studies?PatientID=Smi%00h*", {}), ("/instances?limit=5&AccessionNumber=%0A", {}),
                       ("/studies/1.2.3/series/4%005/metadata", {}), ("/viewer/a%01b", {}),
                       ("/healthz?x=%7F", {}), ("/studies", {"host": "["}))
    assert [a.status_code for a in answers] == [400] * 6
    assert answers[0].text.startswith("query parameter 'PatientID': the value contains the control character U+0000")
    assert answers[1].text.startswith("query parameter 'AccessionNumber'")
    assert answers[2].text.startswith("the path contains the control character U+0000")
    assert answers[5].text.startswith("the Host header '['")


def test_a_viewer_path_longer_than_a_file_name_may_be_is_not_a_500(tmp_path: Any) -> None:
    # /viewer/xxx...(300) raised OSError ENAMETOOLONG in Path.is_file: 500 with a traceback
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<html></html>")
    route, file = _app_get(_open_settings(tmp_path, dist=dist), ("/viewer/" + "x" * 300, {}),
                           ("/viewer/" + "x" * 300 + ".js", {}))
    assert route.status_code == 200 and "<html>" in route.text  # a client-side route: the index
    assert file.status_code == 404


def test_a_nul_in_the_specific_character_set_is_unreadable_not_an_internal_error() -> None:
    # pydicom's codecs.lookup raised ValueError (embedded null character): STOW-RS and C-STORE answered
    # 0xA700 (out of resources: retry) for a file that can never be stored; taken as the default
    # repertoire instead, the file was stored, and pydicom could not read it back for WADO-RS metadata (500)
    from dicomflow.dicom.exceptions import UnreadableDicom
    from dicomflow.dicom.values import encodings_for

    for raw in (b"ISO_IR \x01\x000", b"ISO_IR\x00100", b"\x00\x00O_IR 100", b"ISO_IR 100\\\x00IR 87"):
        with pytest.raises(UnreadableDicom, match=r"Specific Character Set .* is not a character set"):
            encodings_for(raw)
    assert encodings_for(b"ISO_IR \x01") == encodings_for(None)  # unknown, not unusable: the default repertoire
    assert encodings_for(b"ISO_IR 100\x00") == encodings_for(b"ISO_IR 100")  # trailing NUL padding is padding


def test_ingest_refuses_a_nul_in_the_specific_character_set_as_malformed(tmp_path: Any) -> None:
    # the STOW-RS / C-STORE side of the rule above: 0xC000 (malformed), not an internal error (0xA700, retry)
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pydicom.uid import ExplicitVRLittleEndian

    from dicomflow.ingest.exceptions import MalformedDatasetError
    from dicomflow.ingest.ingestor import Ingestor
    from dicomflow.settings import IngestSettings, StorageSettings

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.1"
    ds.PatientID = "P1"
    ds.StudyDate = "20240101"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    data = fp.getvalue().replace(b"ISO_IR 192", b"ISO_IR\x00192")
    ingestor = Ingestor(StorageSettings(root=tmp_path / "root"), IngestSettings(), "node-1")
    with pytest.raises(MalformedDatasetError, match="Specific Character Set"):
        ingestor.read(data, ExplicitVRLittleEndian)
