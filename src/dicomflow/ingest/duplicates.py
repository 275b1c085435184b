"""The same SOP Instance UID again: the one decision every way in makes (C-STORE, ``publish``, STOW-RS).

A new instance is written to a temporary file next to its final name first
(see :mod:`~dicomflow.ingest.storage`); :func:`place` then puts it there:

- no file under that name: the temporary file is *linked* to it (``link``
  fails if the name exists, so two senders of the same instance at once
  cannot both think theirs is new) -> ``new``, publish;
- a file with the same data set (same transfer syntax, same bytes after the
  File Meta Information, which names the sender and may differ) ->
  ``identical``: nothing changes, nothing is published, Success; unless
  the first copy's store event was never acknowledged (see below): then it
  is published again (``new``);
- different content, by ``ingest.duplicates``:

  - ``reject`` (default): the stored copy stays, the sender gets a failure
    status (0x0111 Duplicate SOP Instance) or the folder publisher a
    "skipped" line. An archive must not let a later copy silently change
    what earlier store events and readers saw, and the sender must learn
    that its copy was not taken;
  - ``keep``: the stored copy stays, the sender gets Success, nothing is
    published (for senders that retry failures forever);
  - ``replace``: the new file takes the name atomically; the old one stays
    linked under a hidden backup name until the new store event is
    acknowledged (:meth:`Placement.acknowledged`), and is put back if it is
    not (:meth:`Placement.not_acknowledged`).

A new file is marked by an empty hidden ``.{name}.unacknowledged`` beside it
from before it gets its name until its store event is acknowledged (so a
process killed in between leaves the mark too). A file whose event Kafka
did not acknowledge in time stays where it is, marked
(:meth:`Placement.not_acknowledged`): the event may still be delivered
later (the producer keeps trying), and must then find its file; and the
sender's retry, identical, is published again instead of being taken for a
copy that is indexed already. The acknowledgement removes the mark.

Every non-identical duplicate is audited by the caller
(:func:`~dicomflow.audit.events.duplicate_instance`).
"""

from __future__ import annotations

import errno
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dicomflow.dicom.part10 import read_file_meta
from dicomflow.ingest.exceptions import IngestError, StorageWriteError

log = logging.getLogger(__name__)

Policy = Literal["reject", "replace", "keep"]
Outcome = Literal["new", "identical", "rejected", "kept", "replaced"]
#: Outcomes after which a store event must go out (a new copy under the name), on either backend.
PUBLISHED: frozenset[Outcome] = frozenset({"new", "replaced"})
#: Outcomes of a non-identical duplicate (audited), on either backend.
DUPLICATES: frozenset[Outcome] = frozenset({"rejected", "kept", "replaced"})

#: PS3.7 Annex C: Failure, Duplicate SOP Instance.
DUPLICATE_SOP_INSTANCE = 0x0111
_CHUNK = 1 << 20


class DuplicateInstanceError(IngestError):
    """The SOP Instance UID is stored already with other content, and ``ingest.duplicates = "reject"``."""

    status = DUPLICATE_SOP_INSTANCE


@dataclass
class Placement:
    """Where :func:`place` left an instance, and what the caller must do next."""

    outcome: Outcome
    path: Path
    size: int
    #: Size of the copy that was stored before (duplicates only).
    previous_size: int | None = None
    _backup: Path | None = field(default=None, repr=False)

    @property
    def publish(self) -> bool:
        """True when a store event must go out (a new file under the name)."""
        return self.outcome in PUBLISHED

    @property
    def duplicate(self) -> bool:
        """True for a non-identical duplicate (audited)."""
        return self.outcome in DUPLICATES

    def acknowledged(self) -> None:
        """The store event is acknowledged: drop the replaced copy's backup and any mark (observer on failure)."""
        if self._backup is not None:
            _unlink(self._backup)
            self._backup = None
        _unlink(unacknowledged_mark(self.path))

    def not_acknowledged(self) -> None:
        """The store event was not acknowledged in time: the sender's retry must publish again.

        A new file stays (its event may still arrive) and is marked, so an
        identical retry is published instead of taken as indexed already; a
        replaced one gets the old copy back.
        """
        try:
            if self.outcome == "replaced" and self._backup is not None:
                os.replace(self._backup, self.path)
                self._backup = None
            elif self.outcome == "new":
                os.close(os.open(unacknowledged_mark(self.path), os.O_WRONLY | os.O_CREAT, 0o644))
        except OSError as exc:
            log.error("could not undo storing %s after a failed publication: %s", self.path, exc.strerror)


def unacknowledged_mark(path: Path) -> Path:
    """The hidden mark of a stored file whose store event was not acknowledged."""
    return path.with_name(f".{path.name}.unacknowledged")


def _mark(path: Path) -> bool:
    """Create the unacknowledged mark of ``path``; False if it was there already (an earlier copy's)."""
    try:
        os.close(os.open(unacknowledged_mark(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    return True


def place(temp: Path, path: Path, policy: Policy, *, sop_uid: str | None = None) -> Placement:
    """Put the complete, synced temporary file ``temp`` under ``path`` (see the module documentation).

    ``temp`` is gone afterwards whatever the outcome. The folder is not
    synced here (the caller does it before it promises durability).

    Raises:
        DuplicateInstanceError: different content is stored and the policy is reject.
        StorageWriteError: an OS error (the temporary file is removed).
    """
    try:
        size = os.stat(temp).st_size
        # A new file is marked unacknowledged *before* it gets its name: a process killed
        # between the name and the acknowledgement leaves the mark, so the sender's
        # identical retry is published again instead of answered Success with no event.
        marked = _mark(path)
        try:
            os.link(temp, path)
        except FileExistsError:
            if marked:
                _unlink(unacknowledged_mark(path))
            return _duplicate(temp, path, policy, size, sop_uid)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            if path.exists():  # no hard links on this file system: racy, but still decided
                if marked:
                    _unlink(unacknowledged_mark(path))
                return _duplicate(temp, path, policy, size, sop_uid)
            os.replace(temp, path)
            return Placement("new", path, size)
        _unlink(temp)
        return Placement("new", path, size)
    except IngestError:
        _unlink(temp)
        raise
    except OSError as exc:
        _unlink(temp)
        raise StorageWriteError(f"cannot store the file ({exc.strerror or exc}): {path}", sop_uid=sop_uid) from exc


def _duplicate(temp: Path, path: Path, policy: Policy, size: int, sop_uid: str | None) -> Placement:
    previous = os.stat(path).st_size
    if same_data_set(temp, path):
        _unlink(temp)
        if unacknowledged_mark(path).exists():  # the first copy's event was never acknowledged: publish again
            return Placement("new", path, previous)
        return Placement("identical", path, previous, previous)
    if policy == "reject":
        raise DuplicateInstanceError("SOP Instance UID already stored with other content (ingest.duplicates)",
                                     sop_uid=sop_uid)
    if policy == "keep":
        _unlink(temp)
        return Placement("kept", path, previous, previous)
    backup = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.replaced")
    os.link(path, backup)
    try:
        os.replace(temp, path)
    except OSError:
        _unlink(backup)
        raise
    return Placement("replaced", path, size, previous, backup)


def same_data_set(a: Path, b: Path) -> bool:
    """True when two Part 10 files hold the same data set: same transfer syntax, same bytes after the meta group.

    A file whose meta group cannot be read is compared whole.
    """
    with open(a, "rb") as fa, open(b, "rb") as fb:
        offset_a, syntax_a = data_set_start(fa)
        offset_b, syntax_b = data_set_start(fb)
        if syntax_a != syntax_b:
            return False
        if os.fstat(fa.fileno()).st_size - offset_a != os.fstat(fb.fileno()).st_size - offset_b:
            return False
        fa.seek(offset_a)
        fb.seek(offset_b)
        while True:
            chunk_a, chunk_b = fa.read(_CHUNK), fb.read(_CHUNK)
            if chunk_a != chunk_b:
                return False
            if not chunk_a:
                return True


def data_set_start(f: object) -> tuple[int, str | None]:
    """Where the data set of the Part 10 file open as ``f`` starts, and its transfer syntax (0, None: no meta group)."""
    head = f.read(64 * 1024)  # type: ignore[attr-defined]
    if head[128:132] != b"DICM":
        return 0, None
    try:
        meta, offset = read_file_meta(head, 132)
    except ValueError:
        return 0, None
    return offset, meta.transfer_syntax_uid


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # observer: what matters was decided already
        log.warning("could not remove %s: %s", path, exc.strerror)


__all__ = ["DUPLICATE_SOP_INSTANCE", "DuplicateInstanceError", "Outcome", "Placement", "Policy", "data_set_start", "place",
           "same_data_set", "unacknowledged_mark"]
