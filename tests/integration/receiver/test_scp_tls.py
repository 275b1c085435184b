"""DICOM TLS on the receiver: real clients (dcmtk's storescu +tls, pynetdicom with an SSL context), real broker."""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE

from dicomflow.settings import Settings, TlsSettings
from tests.integration.ingest_support import (
    STORESCU_FLAGS,
    Sample,
    build_sample_corpus,
    free_port,
    make_topics,
    read_audit,
    read_store_events,
    running_receiver,
    stored_files,
    storescu,
    with_receiver,
)
from tests.integration.interop_support import assert_same_content
from tests.integration.nagle_support import NAGLE_MARGIN_S, compare_senders
from tests.integration.pki_support import Pki, client_context, make_pki
from tests.integration.receiver.test_scp import instance


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def sample_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    return build_sample_corpus(tmp_path_factory.mktemp("samples"))


@pytest.fixture(params=["native", "pynetdicom"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def tls_settings(settings: Settings, pki: Pki, engine: str, *, port: int = 0, mutual: bool = True) -> Settings:
    tls = TlsSettings(cert_file=pki.server_cert, key_file=pki.server_key, ca_file=pki.ca_cert if mutual else None,
                      port=port, handshake_timeout_s=5.0)
    s = with_receiver(settings, engine=engine, tls=tls)
    make_topics(s)
    return s


def storescu_tls(port: int, pki: Pki, paths: Sequence[Path], *flags: str, rogue: bool = False):  # type: ignore[no-untyped-def]
    cert, key = (pki.rogue_cert, pki.rogue_key) if rogue else (pki.client_cert, pki.client_key)
    return storescu(port, paths, "+tls", str(key), str(cert), "+cf", str(pki.ca_cert), *flags)


def send_tls(port: int, datasets: Sequence[Dataset], pki: Pki | None, *, rogue: bool = False,
             certificate: bool = True) -> list[int] | None:
    """pynetdicom over TLS (or plain TCP with ``pki=None``); None when no association was established."""
    ae = AE(ae_title="PYNETDICOM")
    ae.acse_timeout = ae.network_timeout = 5
    for ds in datasets:
        ae.add_requested_context(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
    tls_args = None if pki is None else (client_context(pki, rogue=rogue, certificate=certificate), "localhost")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            assoc = ae.associate("127.0.0.1", port, ae_title="DICOMFLOW", tls_args=tls_args)
        except OSError:  # the TLS handshake failed inside the client
            return None
        if not assoc.is_established:
            # pynetdicom leaves the requestor's socket open when TLS or the association fails
            transport = assoc.dul.socket
            if transport is not None and transport.socket is not None:
                transport.socket.close()
            return None
        try:
            return [int(assoc.send_c_store(ds).Status) for ds in datasets]
        finally:
            assoc.release()


def test_storescu_over_tls_stores_every_transfer_syntax(
    settings: Settings, pki: Pki, engine: str, sample_corpus: list[Sample]
) -> None:
    s = tls_settings(settings, pki, engine)
    groups: dict[str, list[Path]] = {}
    for sample in sample_corpus:
        groups.setdefault(sample.transfer_syntax_uid, []).append(sample.path)
    with running_receiver(s):
        runs = [storescu_tls(s.receiver.port, pki, files, *STORESCU_FLAGS[ts]) for ts, files in sorted(groups.items())]
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "E:" not in run.stderr, run.stderr
    events = {e.sop_uid: e for _, e in read_store_events(s, s.topics.main)}
    assert set(events) == {x.sop_uid for x in sample_corpus}
    for sample in sample_corpus:
        assert_same_content(sample.path, Path(events[sample.sop_uid].file_path))


def test_tls_beside_plain_refuses_plain_tcp_and_untrusted_certificates(
    settings: Settings, pki: Pki, engine: str
) -> None:
    tls_port = free_port()
    s = tls_settings(settings, pki, engine, port=tls_port)
    trusted, plain_ok = instance(), instance()
    with running_receiver(s):
        assert send_tls(s.receiver.port, [plain_ok], None) == [0]  # the plain listener stays plain
        assert send_tls(tls_port, [instance()], None) is None  # plain DICOM on the TLS port
        assert send_tls(tls_port, [instance()], pki, rogue=True) is None  # a certificate of another CA
        assert send_tls(tls_port, [instance()], pki, certificate=False) is None  # no client certificate
        assert send_tls(tls_port, [trusted], pki) == [0]
        rogue_run = storescu_tls(tls_port, pki, [_saved(instance(), s)], rogue=True)
    assert rogue_run.returncode != 0
    stored = {p.stem for p in stored_files(s.storage.root)}
    assert stored == {trusted.SOPInstanceUID, plain_ok.SOPInstanceUID}
    assert {e.sop_uid for _, e in read_store_events(s, s.topics.main)} == stored
    alerts = [a for a in read_audit(s) if a.event_id.code == "110113"]
    kinds = Counter(a.participant_objects[0].details["kind"] for a in alerts)
    assert kinds == Counter({"not-tls": 1, "untrusted-certificate": 2, "no-certificate": 1}), alerts
    for alert in alerts:
        assert alert.event_type[0].code == "110126" and alert.event_outcome == 4
        assert alert.active_participants[1].network_access_point_id == "127.0.0.1"
        assert alert.event_outcome_description


def test_a_sender_that_leaves_nagle_on_is_not_stalled_over_tls(
    settings: Settings, pki: Pki, engine: str, tmp_path: Path
) -> None:
    """Issue 23 over TLS: the context's sockets acknowledge each read at once, as plain TCP ones do."""
    s = tls_settings(settings, pki, engine)
    flags = ("+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca_cert))
    with running_receiver(s):
        run = compare_senders(s, s.receiver.port, tmp_path / "nagle", *flags)
    assert run.stall_s < NAGLE_MARGIN_S, f"Nagle stalls over TLS? {run}"
    assert {e.sop_uid for _, e in read_store_events(s, s.topics.main)} == run.sent


def test_a_stalled_tls_handshake_does_not_hold_up_other_connections(settings: Settings, pki: Pki, engine: str) -> None:
    import socket

    s = tls_settings(settings, pki, engine)
    with running_receiver(s), socket.create_connection(("127.0.0.1", s.receiver.port)) as silent:  # connects, never says hello
        assert send_tls(s.receiver.port, [instance()], pki) == [0]
        silent.settimeout(15)
        assert silent.recv(1024) == b""  # closed by the receiver after the handshake timeout
    alerts = [a for a in read_audit(s) if a.event_id.code == "110113"]
    assert [a.participant_objects[0].details["kind"] for a in alerts] == ["timeout"]


def _saved(ds: Dataset, s: Settings) -> Path:
    path = s.storage.root.parent / f"{ds.SOPInstanceUID}.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)
    return path


def test_tls_settings_are_checked(settings: Settings, tmp_path: Path) -> None:
    from dicomflow.errors import ConfigError
    from dicomflow.receiver.tls import server_context

    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"receiver\.tls\.cert_file"):
        server_context(TlsSettings(cert_file=broken, key_file=broken))
    assert dataclasses.replace(settings.receiver.tls).enabled is False
