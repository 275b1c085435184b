"""``dicomflow dlq list | show | redrive`` against the real broker, PostgreSQL and consumer.

The operator's runbook, end to end: a store event whose file is missing is
dead-lettered (file-missing); the file is restored; a dry run publishes
nothing; the re-drive publishes the original bytes back and the consumer
indexes the instance; a second re-drive publishes nothing; the re-drive is
in the ledger and on the audit topic.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from dicomflow.cli import app
from dicomflow.kafka.admin import delete_topics
from dicomflow.kafka.dlq import HEADER_REDRIVEN_FROM
from dicomflow.models import AuditEvent
from dicomflow.settings import Settings, to_child_env
from tests.integration.consumer_support import corpus, counts, pipeline, publish, query, run_service, topic

__all__ = ["pipeline"]


@pytest.fixture
def dlq_settings(pipeline: Settings) -> Iterator[Settings]:
    """The pipeline's settings with a ledger topic of this test only."""
    topics = dataclasses.replace(pipeline.topics, redrive_ledger=f"{pipeline.topics.main}.redriven")
    yield dataclasses.replace(pipeline, topics=topics)
    try:
        delete_topics(pipeline.kafka, [topics.redrive_ledger])
    except Exception:  # noqa: BLE001 - best effort: a failed test must report its own error
        pass


def dicomflow(settings: Settings, *args: str) -> Any:
    """Run a ``dicomflow`` command in-process with exactly these settings; return its --json output."""
    result = CliRunner().invoke(app, [*args, "--json"], env=to_child_env(settings, {}))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_missing_file_dead_lettered_restored_redriven_indexed_once(dlq_settings: Settings, tmp_path: Path) -> None:
    s = dlq_settings
    c = corpus(s, 6, studies=1, series_per_study=2)
    lost = c.events[2]
    aside = tmp_path / "aside.dcm"
    shutil.move(lost.file_path, aside)
    publish(s, c.events)

    first = run_service(s, until_idle_s=3.0)
    assert first.dead_lettered == 1
    assert counts(s.database)["dicom_image_meta"] == 5

    listed = dicomflow(s, "dlq", "list")
    assert listed["counts"] == {"file-missing": 1}
    [letter] = listed["letters"]
    assert letter["id"].startswith(f"{s.topics.dlq}:")
    assert letter["source_topic"] == s.topics.main and letter["redriven"] is False
    assert letter["key"] == lost.key()
    assert lost.file_path in letter["reason"]
    assert dicomflow(s, "dlq", "list", "--class", "wire-format")["letters"] == []
    assert len(dicomflow(s, "dlq", "list", "--since", "10m")["letters"]) == 1
    assert dicomflow(s, "dlq", "list", "--since", "2999-01-01")["letters"] == []

    shown = dicomflow(s, "dlq", "show", letter["id"])
    assert shown["payload"]["sop_uid"] == lost.sop_uid
    assert dict(shown["headers"])["dicomflow.error.class"] == "file-missing"
    assert shown["redriven"] is None

    shutil.move(aside, lost.file_path)  # the cause is fixed
    before = len(topic(s, s.topics.main))

    dry = dicomflow(s, "dlq", "redrive", "--class", "file-missing", "--dry-run")
    assert [o["outcome"] for o in dry["outcomes"]] == ["would-redrive"]
    assert len(topic(s, s.topics.main)) == before  # a dry run publishes nothing

    done = dicomflow(s, "dlq", "redrive", "--id", letter["id"], "--operator", "ops-on-call")
    assert [o["outcome"] for o in done["outcomes"]] == ["redriven"]
    again = dicomflow(s, "dlq", "redrive", "--class", "file-missing")
    assert [o["outcome"] for o in again["outcomes"]] == ["already-redriven"]

    main = topic(s, s.topics.main)
    assert len(main) == before + 1  # re-driven twice, published once
    redriven = main[-1] if main[-1].headers else next(r for r in main if dict(r.headers).get(HEADER_REDRIVEN_FROM))
    assert dict(redriven.headers)[HEADER_REDRIVEN_FROM] == letter["id"].encode()
    original = next(r for r in main if r.key == redriven.key and r.value == redriven.value and r is not redriven)
    assert original.value == redriven.value  # the original bytes, untouched

    second = run_service(s, until_idle_s=3.0)
    assert second.dead_lettered == 0 and second.instances == 1
    assert counts(s.database)["dicom_image_meta"] == 6
    assert query(s.database, "SELECT count(*) FROM dicom_image_meta WHERE sop_uid = %s", (lost.sop_uid,)) == [(1,)]

    audits = [msgspec.json.decode(r.value or b"", type=AuditEvent) for r in topic(s, s.topics.audit)]
    redrives = [a for a in audits if any(t.code == "REDRIVE" for t in a.event_type)]
    assert len(redrives) == 1
    assert redrives[0].participant_objects[0].object_id == letter["id"]
    assert redrives[0].active_participants[0].user_id == "ops-on-call"
    assert dicomflow(s, "dlq", "list")["letters"][0]["redriven"] is True


def test_unknown_letter_id_is_a_clear_error(dlq_settings: Settings) -> None:
    result = CliRunner().invoke(app, ["dlq", "show", f"{dlq_settings.topics.dlq}:0:999"],
                                env=to_child_env(dlq_settings, {}))
    assert result.exit_code == 1, result.output
    assert f"no dead letter {dlq_settings.topics.dlq}:0:999" in result.output, repr(result.exception)
    result = CliRunner().invoke(app, ["dlq", "redrive", "--id", "not-an-id"], env=to_child_env(dlq_settings, {}))
    assert result.exit_code == 1
    assert "expected <dlq-topic>:<partition>:<offset>" in result.output
