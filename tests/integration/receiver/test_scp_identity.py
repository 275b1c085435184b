"""DICOM user identity on the receiver: pynetdicom and dcmtk's storescu (--user/--password), the real broker."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.pdu_primitives import UserIdentityNegotiation

from dicomflow.receiver.identity import add_user
from dicomflow.settings import Settings
from tests.integration.ingest_support import make_topics, read_audit, running_receiver, storescu, with_receiver
from tests.integration.receiver.test_scp import instance


@pytest.fixture(params=["native", "pynetdicom"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def guarded(settings: Settings, engine: str, tmp_path: Path) -> Settings:
    users = tmp_path / "users"
    add_user(users, "alice", "s3cret")
    assert (users.stat().st_mode & 0o777) == 0o600
    assert "s3cret" not in users.read_text()
    s = with_receiver(settings, engine=engine, require_user_identity=True, users_file=users)
    make_topics(s)
    return s


def send_as(port: int, ds: Dataset, user: str | None, password: str | None) -> tuple[bool, int | None]:
    """(established, C-STORE status) sending with a user identity of type 2 (or none)."""
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = 10
    ae.add_requested_context(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
    negotiation = []
    if user is not None:
        item = UserIdentityNegotiation()
        item.user_identity_type = 2
        item.primary_field = user.encode()
        item.secondary_field = (password or "").encode()
        item.positive_response_requested = True
        negotiation.append(item)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMFLOW", ext_neg=negotiation)
    if not assoc.is_established:
        return False, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return True, int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def test_right_password_accepted_wrong_or_none_rejected_and_audited(guarded: Settings, tmp_path: Path) -> None:
    port = guarded.receiver.port
    right = instance()
    right_file = tmp_path / "dcmtk.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        instance().save_as(right_file, enforce_file_format=True)
    with running_receiver(guarded):
        assert send_as(port, right, "alice", "s3cret") == (True, 0)
        assert send_as(port, instance(), "alice", "wrong") == (False, None)
        assert send_as(port, instance(), None, None) == (False, None)
        good = storescu(port, [right_file], "--user", "alice", "--password", "s3cret", "--pos-response")
        bad = storescu(port, [right_file], "--user", "alice", "--password", "nope")
    assert good.returncode == 0, good.stderr
    assert bad.returncode != 0
    assert "Rejected" in bad.stderr or "rejected" in bad.stderr, bad.stderr
    audit = read_audit(guarded)
    transferred = [a for a in audit if a.event_id.code == "110104" and a.event_outcome == 0]
    assert len(transferred) == 2
    assert {a.active_participants[0].user_name for a in transferred} == {"alice"}
    refused = [a for a in audit if a.event_id.code == "110114"]
    assert len(refused) == 3
    assert sorted(a.active_participants[0].user_name or "" for a in refused) == ["", "alice", "alice"]
    descriptions = " ".join(a.event_outcome_description or "" for a in refused)
    assert "wrong username or password" in descriptions and "no user identity" in descriptions
    assert "s3cret" not in descriptions and "nope" not in descriptions


def test_without_a_users_file_the_username_is_still_audited(settings: Settings, engine: str) -> None:
    s = with_receiver(settings, engine=engine)
    make_topics(s)
    with running_receiver(s):
        assert send_as(s.receiver.port, instance(), "bob", "anything") == (True, 0)
    [event] = [a for a in read_audit(s) if a.event_id.code == "110104"]
    assert event.active_participants[0].user_name == "bob"
