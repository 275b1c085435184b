"""What ``dicomflow publish`` does with a file, decided before anything is sent.

The consumer indexes a store event only when its ``file_path`` resolves
(symbolic links and ``..`` followed) to a readable DICOM file under the
storage root; anything else is dead-lettered (see
:func:`dicomflow.pipeline.parse_worker.resolve_in_root`). The folder publisher
applies the same rule up front, so a file the consumer would refuse is
refused here, listed with its reason, and never published:

- by default (``copy``) a file outside the root is copied in; a Part 10 file
  already under the root is published in place; a data set without a Part 10
  header is copied even from under the root, so that its copy gets one;
- with ``--no-copy`` every file is published where it is, so a file outside
  the root is refused (without reading it), and a command line naming a path
  outside the root is refused as a whole before anything is published.

The functions here are pure (they take resolved paths), except
:func:`outside_root`, which resolves the paths it is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from dicomflow.dicom.part10 import Layout

#: Where a published file is read from: where it is, or a copy in the storage layout.
Where = Literal["in-place", "copy"]


def is_under(resolved: Path, root: Path) -> bool:
    """True when ``resolved`` (a resolved path) is ``root`` (resolved) or lies inside it: the consumer's test."""
    return resolved.is_relative_to(root)


def refusal_before_reading(resolved: Path, root: Path, *, copy: bool) -> str | None:
    """Why a file is refused before it is opened, or None: only a file outside the root with ``--no-copy``.

    Decided from the path alone, so a large folder outside the root costs no
    reads to refuse.
    """
    if copy or is_under(resolved, root):
        return None
    return f"outside the storage root: {resolved} is not under {root} (--no-copy publishes files where they are)"


def where(*, inside_root: bool, layout: Layout, copy: bool) -> Where:
    """Where the consumer will read the file from (the file passed :func:`refusal_before_reading`).

    With ``copy`` (the default) a file is copied unless the consumer can read
    it where it is: a Part 10 file under the root. Without, it stays in place
    (under the root, or :func:`refusal_before_reading` refused it); whether
    the consumer can read a data set without a Part 10 header is then the
    reader's verdict, the same reader as the consumer's.
    """
    if not copy:
        return "in-place"
    return "in-place" if inside_root and layout == "part10" else "copy"


def outside_root(paths: Iterable[Path], root: Path) -> list[Path]:
    """The paths (files or folders, as given on the command line) that do not resolve under ``root`` (resolved).

    With ``--no-copy`` none of them could be indexed: the run is refused
    before anything is read or published. Costs one ``realpath`` per path
    given, not per file found.
    """
    return [path for path in paths if not is_under(path.resolve(), root)]


def no_copy_refusal(outside: list[Path], root: Path, *, shown: int = 5) -> str:
    """The message refusing a ``--no-copy`` run that names paths outside the storage root: what, why, the way out."""
    names = ", ".join(str(p) for p in outside[:shown]) + (f" and {len(outside) - shown} more" if len(outside) > shown else "")
    return (
        f"refused, nothing published: --no-copy publishes files where they are, and the consumer reads only files "
        f"under the storage root {root}; outside it: {names}. "
        "Run without --no-copy to copy them into the storage root (the default), or move them under the root first."
    )


__all__ = ["Where", "is_under", "no_copy_refusal", "outside_root", "refusal_before_reading", "where"]
