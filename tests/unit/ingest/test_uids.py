"""UID and tenant validation, and the storage layout built from them."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomflow.ingest.exceptions import (
    CANNOT_UNDERSTAND,
    InvalidTenantError,
    InvalidUIDError,
    StorageWriteError,
)
from dicomflow.ingest.uids import instance_path, is_valid_uid, require_tenant, require_uid, uid_problem

DAY = dt.date(2024, 3, 5)


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.840.10008.1.2.1",
        "0",
        "1.0.2",
        "2.25.184712634720963102739981093765437122571",
        "1." + "2" * 62,  # exactly 64 characters
    ],
)
def test_valid_uids_pass_unchanged(uid: str) -> None:
    assert is_valid_uid(uid)
    assert require_uid(uid, "UID") == uid


@pytest.mark.parametrize(
    ("uid", "problem"),
    [
        ("", "empty"),
        ("../../x", "character '/'"),
        ("1.2.3/../..", "character '/'"),
        ("1.2.3\\4", "character '\\\\'"),
        ("1.2.a", "character 'a'"),
        ("1..2", "empty component"),
        (".1.2", "empty component"),
        ("1.2.", "empty component"),
        ("1.02.3", "leading zero"),
        ("1.2.00", "leading zero"),
        ("1." + "2" * 63, "longer than 64"),
        ("1.2 .3", "character ' '"),
        ("1.2\x00.3", "character '\\x00'"),
    ],
)
def test_invalid_uids_are_refused_with_the_reason(uid: str, problem: str) -> None:
    assert not is_valid_uid(uid)
    reason = uid_problem(uid)
    assert reason is not None and problem in reason
    with pytest.raises(InvalidUIDError) as info:
        require_uid(uid, "SOP Instance UID")
    assert info.value.status == CANNOT_UNDERSTAND
    assert "SOP Instance UID" in str(info.value)


def test_wire_padding_is_removed_but_nothing_else() -> None:
    assert require_uid("1.2.3\x00", "UID") == "1.2.3"
    assert require_uid("1.2.3 ", "UID") == "1.2.3"
    with pytest.raises(InvalidUIDError):
        require_uid(" 1.2.3", "UID")
    with pytest.raises(InvalidUIDError):
        require_uid(None, "UID")


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=8))
def test_every_grammatical_uid_up_to_64_characters_is_accepted(components: list[int]) -> None:
    uid = ".".join(str(c) for c in components)
    assert is_valid_uid(uid) == (len(uid) <= 64)


@given(st.text(min_size=1, max_size=80))
def test_anything_accepted_is_digits_and_dots_and_cannot_name_a_parent(text: str) -> None:
    components = text.split(".")
    grammatical = len(text) <= 64 and all(
        c.isascii() and c.isdigit() and (c == "0" or not c.startswith("0")) for c in components
    )
    assert is_valid_uid(text) == grammatical
    assert (uid_problem(text) is None) == grammatical
    if grammatical:
        assert ".." not in text and "/" not in text and "\x00" not in text


@pytest.mark.parametrize("tenant", ["default", "hospital-a", "Site_2.north", "0"])
def test_safe_tenants_pass(tenant: str) -> None:
    assert require_tenant(tenant) == tenant


@pytest.mark.parametrize("tenant", ["", ".", "..", "../x", "a/b", "-a", ".hidden", "a b", "é", "x" * 65, "a\x00"])
def test_unsafe_tenants_are_refused(tenant: str) -> None:
    with pytest.raises(InvalidTenantError):
        require_tenant(tenant)


def test_instance_path_layout(tmp_path: Path) -> None:
    path = instance_path(tmp_path, "t1", DAY, "1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert path == tmp_path / "t1" / "20240305" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm"


@pytest.mark.parametrize(
    ("study", "series", "sop", "tenant"),
    [
        ("1.2", "1.2.3", "../../x", "t"),
        ("1.2", "1.2.3", "1.2.3/../..", "t"),
        ("..", "1.2.3", "1.2.3.4", "t"),
        ("1.2", "/etc", "1.2.3.4", "t"),
        ("1.2", "1.2.3", "1.2.3.4", "../other-tenant"),
    ],
)
def test_instance_path_refuses_traversal(tmp_path: Path, study: str, series: str, sop: str, tenant: str) -> None:
    with pytest.raises((InvalidUIDError, InvalidTenantError)):
        instance_path(tmp_path, tenant, DAY, study, series, sop)


@given(
    st.text(alphabet="0123456789./\\\x00 a", min_size=1, max_size=70),
    st.text(alphabet="0123456789./\\\x00 a", min_size=1, max_size=70),
)
def test_an_accepted_path_is_always_inside_the_root(series: str, sop: str) -> None:
    root = Path("/srv/dicom/storage")
    try:
        path = instance_path(root, "t", DAY, "1.2.3", series, sop)
    except (InvalidUIDError, InvalidTenantError):  # refused only when a UID is really not one
        assert not (is_valid_uid(series.rstrip("\x00 ")) and is_valid_uid(sop.rstrip("\x00 ")))
        return
    assert is_valid_uid(series.rstrip("\x00 ")) and is_valid_uid(sop.rstrip("\x00 "))
    resolved = Path(os.path.normpath(path))
    assert resolved.parent.parent.parent.parent.parent == root
    assert resolved.name.endswith(".dcm")


def test_a_path_longer_than_the_wire_limit_is_refused(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 200) / ("e" * 200)
    uid = "1." + "2" * 62
    with pytest.raises(StorageWriteError, match="512 bytes"):
        instance_path(deep, "t", DAY, uid, uid, uid)
