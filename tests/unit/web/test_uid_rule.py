"""The web tier applies the one UID rule (dicom.derived): a component with a leading zero is refused everywhere."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException

from dicomflow.dicom.derived import is_valid_uid
from dicomflow.settings import Settings, load_settings
from dicomflow.web import qido, wado
from dicomflow.web.app import create_app
from dicomflow.web.cache import MetadataCache
from dicomflow.web.context import check_uid

#: Digits and dots, so the old web pattern took them; the DICOM grammar (PS3.5 9.1) does not.
REFUSED = ("1.02.3", "01.2", "1.2.00", "1." + "2" * 63, "1..2", "1.2.")
ACCEPTED = ("1.2.840.10008.5.1.4.1.1.2", "0.0", "1.0.2", "2.25.1" + "0" * 58)


def _settings(root: Path) -> Settings:
    base = load_settings(None, {})
    return dataclasses.replace(base, storage=dataclasses.replace(base.storage, root=root),
                               web=dataclasses.replace(base.web, auth="none"))


@pytest.mark.parametrize("uid", REFUSED)
def test_a_path_uid_the_dicom_rule_refuses_is_a_400(uid: str) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(HTTPException) as refused:
        check_uid(uid, "StudyInstanceUID")
    assert refused.value.status_code == 400 and "is not a UID" in str(refused.value.detail)


@pytest.mark.parametrize("uid", ACCEPTED)
def test_a_valid_uid_passes(uid: str) -> None:
    assert is_valid_uid(uid) and check_uid(uid, "StudyInstanceUID") == uid


def test_the_refusal_says_what_is_wrong() -> None:
    with pytest.raises(HTTPException) as refused:
        check_uid("1.02.3", "SeriesInstanceUID")
    assert refused.value.detail == "SeriesInstanceUID '1.02.3' is not a UID: component with a leading zero"


@pytest.mark.parametrize("uid", REFUSED)
def test_qido_refuses_a_uid_match_key_with_a_leading_zero(uid: str) -> None:
    with pytest.raises(qido.QueryError, match="is not a UID"):
        qido.parse("study", [("StudyInstanceUID", f"1.2.3,{uid}")])


def test_the_metadata_cache_does_not_name_a_file_after_an_invalid_uid(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path)
    assert cache.path("t", "1.2", "1.2.3", "1.2.3.4", "trace") is not None
    assert cache.path("t", "1.02", "1.2.3", "1.2.3.4", "trace") is None
    assert cache.path("t", "1.2", "1.2.3", "1.2.03.4", "trace") is None


@pytest.mark.parametrize("route", ["/studies/{uid}", "/studies/{uid}/metadata", "/studies/1.2/series/{uid}",
                                   "/studies/1.2/series/1.2.3/instances/{uid}"])
def test_a_retrieval_of_a_leading_zero_uid_is_answered_400_before_any_lookup(tmp_path: Path, route: str) -> None:
    """Over the app itself: the pool is never opened (no lifespan), so a 400 means the UID was refused first."""
    app = create_app(_settings(tmp_path), route_factories=(wado.routes,), registry=CollectorRegistry(),
                     publish_audit=False)

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web") as client:
            return await client.get(route.format(uid="1.2.03"))

    answer = asyncio.run(get())
    assert answer.status_code == 400, answer.text
    assert "'1.2.03' is not a UID: component with a leading zero" in answer.text
