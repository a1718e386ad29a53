"""`kfm query SQL`: read-only SQL audits over the Parquet mirror with DuckDB.

The mirror (:mod:`kfm_ledger.mirror`) is exposed to the query as the table
``rollback_index``: the fourteen row fields (nested lists of structs kept as DuckDB
``STRUCT(...)[]``, ``created_at`` as ``TIMESTAMP WITH TIME ZONE``), ``leaf_index`` and
``leaf_hash`` (``BLOB``).  The session time zone is UTC, so ``strftime(created_at,
'%Y-%m')`` is a UTC month.

**Freshness.**  The query is refused with :class:`~kfm_ledger.mirror.MirrorDriftError`
when the mirror is missing, stale (it mirrors an older checkpoint) or its footer names
another tree: run ``kfm mirror``.  This check reads only the file's footer; a mirror
hand-edited behind consistent metadata is caught by ``kfm mirror --check`` and
``kfm verify``, which compare it with a regeneration.

**Sandbox.**  The DuckDB session can read the mirror file and nothing else: the SQL
text must be exactly one ``SELECT``-style statement (``SELECT``, ``WITH``, ``FROM``,
``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``) or an ``EXPLAIN`` of one; temp files are
disabled (DuckDB otherwise adds its temp directory, ``./.tmp`` for an in-memory
database, to the directories a sandboxed query may read and write); external access is
disabled (no other files, no network, no ``COPY ... TO``, no ``ATTACH``, no
``INSTALL``/``LOAD``) and the configuration is locked (no ``SET``/``PRAGMA`` changes), so
an audit query cannot read or change anything else, whatever the working directory
holds.  Without temp files a query whose intermediate state exceeds DuckDB's memory
limit fails rather than spilling to disk.

DuckDB is an optional extra: ``pip install 'kfm-ledger[query]'``;
:class:`MissingExtraError` says so when it is absent.

Values in results (:func:`to_json_value`): timestamps as RFC 3339 UTC text ending in
``Z`` (fraction digits only when needed, without trailing zeros); dates as ``YYYY-MM-DD``;
``BLOB`` values (``leaf_hash``) as base64; decimals and intervals as text; lists and structs as JSON arrays and objects.
"""

from __future__ import annotations

import base64
import csv
import datetime
import decimal
import io
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kfm_ledger.log.ledger import Ledger

from ..errors import MissingExtraError, QueryError

__all__ = [
    "QUERY_FORMAT",
    "TABLE_NAME",
    "MissingExtraError",
    "QueryError",
    "QueryResult",
    "require_extra",
    "run_query",
    "to_json_value",
]

#: The ``format`` field of ``kfm query --json``.
QUERY_FORMAT = "kfm.query/v1"
#: The table name a query sees.
TABLE_NAME = "rollback_index"


def require_extra(module: str, extra: str, what: str) -> Any:
    """Import an optional dependency or raise :class:`MissingExtraError`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(module, extra, what) from None


@dataclass(frozen=True)
class QueryResult:
    """Columns (name, DuckDB type) and rows of one query over the mirror of ``tree_size``."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    tree_size: int
    root: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "format": QUERY_FORMAT,
            "tree_size": self.tree_size,
            "root": base64.b64encode(self.root).decode(),
            "columns": [{"name": n, "type": t} for n, t in zip(self.columns, self.types)],
            "row_count": len(self.rows),
            "rows": [[to_json_value(v) for v in row] for row in self.rows],
        }

    def render_csv(self) -> str:
        """RFC 4180 CSV with a header line; nested values as JSON text, NULL as empty."""
        import json

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            cells = []
            for v in row:
                j = to_json_value(v)
                if j is None:
                    cells.append("")
                elif isinstance(j, (list, dict)):
                    cells.append(json.dumps(j, ensure_ascii=False, separators=(",", ":")))
                elif isinstance(j, bool):
                    cells.append("true" if j else "false")
                else:
                    cells.append(str(j) if not isinstance(j, float) else repr(j))
            writer.writerow(cells)
        return out.getvalue()

    def render_text(self) -> str:
        """An aligned table (numbers right-aligned, floats to at most 6 decimals) and a row count."""
        cells = [[_text_cell(v) for v in row] for row in self.rows]
        widths = [len(c) for c in self.columns]
        for row in cells:
            for i, c in enumerate(row):
                widths[i] = max(widths[i], len(c))
        numeric = [_is_numeric_type(t) for t in self.types]

        def line(values: Sequence[str]) -> str:
            parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
            return "  ".join(parts).rstrip()

        out = [line(self.columns), "  ".join("-" * w for w in widths)]
        out += [line(row) for row in cells]
        out.append(f"({len(self.rows)} row{'s' if len(self.rows) != 1 else ''})")
        return "\n".join(out)


_NUMERIC_PREFIXES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                     "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "REAL")


def _is_numeric_type(type_name: str) -> bool:
    return type_name.upper().startswith(_NUMERIC_PREFIXES)


def _text_cell(value: Any) -> str:
    import json

    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value):
            text = f"{value:.6f}".rstrip("0").rstrip(".")
            return "0" if text in ("-0", "") else text
        return repr(value)
    j = to_json_value(value)
    if isinstance(j, (list, dict)):
        return json.dumps(j, ensure_ascii=False, separators=(",", ":"))
    return str(j)


def to_json_value(value: Any) -> Any:
    """A DuckDB result value as JSON (see the module docstring for the mapping)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            return value.isoformat()
        text = value.astimezone(datetime.UTC).replace(tzinfo=None).isoformat()
        if value.microsecond:
            text = text.rstrip("0")  # 12:00:00.250000 -> 12:00:00.25, as the ledger writes it
        return text + "Z"
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, (decimal.Decimal, datetime.timedelta, uuid.UUID)):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return str(value)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


#: Statement types ``kfm query`` runs (by name of ``duckdb.StatementType``).
_QUERY_STATEMENTS = frozenset({"SELECT", "EXPLAIN"})


def _check_statement(duckdb: Any, con: Any, sql: str) -> None:
    """Refuse SQL that is not exactly one ``SELECT``-style statement (or its ``EXPLAIN``)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(f"the query failed: {e}", sql=sql) from None
    if len(statements) != 1:
        raise QueryError(
            f"kfm query runs exactly one SELECT-style statement; the SQL holds {len(statements)}",
            sql=sql,
        )
    kind = getattr(statements[0].type, "name", str(statements[0].type))
    if kind not in _QUERY_STATEMENTS:
        raise QueryError(
            f"kfm query runs one SELECT-style statement (SELECT, WITH, FROM, DESCRIBE, SHOW, "
            f"SUMMARIZE, EXPLAIN); refused a {kind} statement",
            sql=sql,
        )


def run_query(ledger: Ledger, sql: str) -> QueryResult:
    """Run ``sql`` over the ledger's mirror (table ``rollback_index``) and fetch every row.

    Raises :class:`~kfm_ledger.mirror.MirrorDriftError` when the mirror is not current,
    :class:`MissingExtraError` without DuckDB, :class:`QueryError` when DuckDB rejects
    the SQL.
    """
    from ..mirror import check_mirror, mirror_source

    status = check_mirror(ledger, regenerate=False)
    status.raise_for_status()
    duckdb = require_extra("duckdb", "query", "kfm query")
    con = duckdb.connect(":memory:")
    try:
        _check_statement(duckdb, con, sql)
        con.execute("SET TimeZone = 'UTC'")
        # No temp files: DuckDB adds its temp directory (./.tmp for an in-memory
        # database) to the directories a sandboxed query may read and write.
        con.execute("SET temp_directory = ''")
        source = mirror_source(ledger)
        if isinstance(source, str):
            path = source
            con.execute(f"CREATE VIEW {TABLE_NAME} AS SELECT * FROM read_parquet({_sql_string(path)})")
            con.execute(f"SET allowed_paths = [{_sql_string(path)}]")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pq.read_table(pa.BufferReader(source))
            con.register(TABLE_NAME, table)
        con.execute("SET allowed_directories = []")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            cursor = con.execute(sql)
            description = cursor.description
            rows = cursor.fetchall() if description is not None else []
        except duckdb.Error as e:
            raise QueryError(f"the query failed: {e}", sql=sql) from None
    finally:
        con.close()
    if description is None:
        raise QueryError("the statement returned no result set (kfm query runs SELECT-style audits)", sql=sql)
    return QueryResult(
        columns=tuple(d[0] for d in description),
        types=tuple(str(d[1]) for d in description),
        rows=tuple(tuple(r) for r in rows),
        tree_size=ledger.size,
        root=ledger.root,
    )
