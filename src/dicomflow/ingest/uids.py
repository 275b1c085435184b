"""UID and tenant validation, and the storage layout built from them.

UIDs arrive from the network and become folder and file names, so they are
checked against the DICOM UID grammar (PS3.5 section 9.1:
:func:`dicomflow.dicom.derived.uid_problem`, the rule the consumer applies
too) before anything touches the disk: digits and dots only, at most 64 characters, no empty
component, no leading zero in a component other than "0" itself. That
grammar admits no ``/``, no ``..`` and no NUL, so a UID that passes cannot
leave the storage root. The tenant id gets the same treatment with its own,
slightly wider, grammar.

Layout: ``{root}/{tenant}/{YYYYMMDD}/{study_uid}/{series_uid}/{sop_uid}.dcm``.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from dicomflow.dicom.derived import UID_MAX_LENGTH, is_valid_uid, uid_problem
from dicomflow.ingest.exceptions import InvalidTenantError, InvalidUIDError, StorageWriteError

#: Longest tenant id (tenant_id is str(64) on the wire).
TENANT_MAX_LENGTH = 64
#: file_path is str(512) on the wire; a longer path would be truncated into a lie.
FILE_PATH_MAX_BYTES = 512

_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Padding a UI value may carry on the wire (PS3.5 6.2: NUL; some senders use a space).
_UID_PADDING = "\x00 "


def require_uid(value: str | None, name: str) -> str:
    """Return the UID without its wire padding, or raise if it is not a valid UID.

    Trailing NUL and space padding is removed first (a UI value of odd length
    is padded with NUL on the wire); anything else unusual is an error.

    Raises:
        InvalidUIDError: ``value`` is missing, empty, too long or malformed.
    """
    text = (value or "").rstrip(_UID_PADDING)
    problem = uid_problem(text)
    if problem is not None:
        raise InvalidUIDError(name, value or "", problem)
    return text


def require_tenant(value: str) -> str:
    """Return ``value`` when it is a safe tenant folder name.

    Letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit
    (so never ``.`` or ``..``), at most 64 characters.

    Raises:
        InvalidTenantError: anything else (a ``/``, spaces, non-ASCII, empty).
    """
    if not value or len(value) > TENANT_MAX_LENGTH or _TENANT.fullmatch(value) is None:
        raise InvalidTenantError(
            f"invalid tenant id {value[:80]!r}: use 1-{TENANT_MAX_LENGTH} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def instance_path(
    root: Path, tenant: str, study_date: dt.date, study_uid: str, series_uid: str, sop_uid: str
) -> Path:
    """Where an instance lives: ``{root}/{tenant}/{YYYYMMDD}/{study}/{series}/{sop}.dcm``.

    ``root`` should be absolute (the store event carries an absolute path).
    Every component is validated here, whatever the caller did before.

    Raises:
        InvalidUIDError: a UID is malformed.
        InvalidTenantError: the tenant id is not a safe folder name.
        StorageWriteError: the resulting path is longer than the wire
            format's file_path (512 bytes): the storage root is too deep.
    """
    parts = (
        require_tenant(tenant),
        study_date.strftime("%Y%m%d"),
        require_uid(study_uid, "Study Instance UID"),
        require_uid(series_uid, "Series Instance UID"),
        require_uid(sop_uid, "SOP Instance UID") + ".dcm",
    )
    path = root.joinpath(*parts)
    if len(str(path).encode("utf-8")) > FILE_PATH_MAX_BYTES:
        raise StorageWriteError(
            f"storage path {str(path)[:80]}... exceeds {FILE_PATH_MAX_BYTES} bytes; use a shorter storage.root"
        )
    return path


__all__ = [
    "FILE_PATH_MAX_BYTES",
    "TENANT_MAX_LENGTH",
    "UID_MAX_LENGTH",
    "instance_path",
    "is_valid_uid",
    "require_tenant",
    "require_uid",
    "uid_problem",
]
