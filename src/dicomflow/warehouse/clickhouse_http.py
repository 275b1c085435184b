"""A small client of ClickHouse's HTTP interface (standard library only).

Used by ``dicomflow report --clickhouse URL`` and to apply the generated DDL.
Values travel as query parameters (``{name:Type}`` placeholders, sent as
``param_<name>``) on servers that support them; the report's queries need
none, since they only take identifiers from the settings.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from dicomflow.errors import DicomflowError


class ClickHouseError(DicomflowError):
    """ClickHouse refused a statement or could not be reached."""


class ClickHouseHTTP:
    """Statements over HTTP POST, one per request; results as JSON rows."""

    def __init__(self, url: str, *, timeout_s: float = 30.0, database: str | None = None) -> None:
        self.url = url.rstrip("/") + "/"
        self.timeout_s = timeout_s
        self.database = database

    def _post(self, statement: str, params: dict[str, str] | None = None) -> bytes:
        query: dict[str, str] = {}
        if self.database:
            query["database"] = self.database
        for k, v in (params or {}).items():
            query[f"param_{k}"] = v
        url = self.url + ("?" + urllib.parse.urlencode(query) if query else "")
        req = urllib.request.Request(url, data=statement.encode("utf-8"), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body: bytes = resp.read()
                return body
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace").strip()
            raise ClickHouseError(f"ClickHouse at {self.url} refused: {detail[:800]}\nstatement: {statement[:300]}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ClickHouseError(f"cannot reach ClickHouse at {self.url}: {exc}") from exc

    def execute(self, statement: str) -> None:
        """Run one statement that returns nothing (DDL, OPTIMIZE ...)."""
        self._post(statement)

    def rows(self, query: str) -> list[dict[str, Any]]:
        """Rows of a SELECT as dicts (``FORMAT JSONEachRow`` is appended)."""
        body = self._post(query.rstrip().rstrip(";") + "\nFORMAT JSONEachRow")
        return [json.loads(line) for line in body.decode("utf-8").splitlines() if line.strip()]

    def scalar(self, query: str) -> Any:
        """The first column of the first row."""
        rows = self.rows(query)
        if not rows:
            return None
        return next(iter(rows[0].values()))

    def apply(self, ddl_text: str) -> int:
        """Run every statement of a generated DDL text; return how many ran."""
        from dicomflow.warehouse.ddl_clickhouse import split_statements

        statements = split_statements(ddl_text)
        for statement in statements:
            self.execute(statement)
        return len(statements)


__all__ = ["ClickHouseError", "ClickHouseHTTP"]
