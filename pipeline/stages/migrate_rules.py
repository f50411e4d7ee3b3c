"""Expand/contract rules for a service's SQL migrations, checked before the migrate stage runs any of them.

During a rolling update the old pods keep running against the migrated schema, so a migration may only add
(expand). A statement that removes or reshapes what a version reads — DROP TABLE/VIEW, ALTER TABLE … DROP
COLUMN, ALTER COLUMN … TYPE, RENAME of a table or a column — is a *contract* step: refused unless its file
starts with the marker line `-- veza:contract` **and** the version running now no longer uses the object
(its `schema-uses.txt`, see parse_uses). A statement PostgreSQL cannot run inside a transaction block
(CREATE INDEX CONCURRENTLY, VACUUM…) is refused as well: each migration runs in one transaction, so it applies
whole or not at all. A DO block is refused: its body is not SQL the check can read.

The statements are parsed by pglast (PyPI), a binding of libpg_query, which is PostgreSQL's own parser: what it
reads is what the server will execute (dollar quoting, comments, quoted identifiers, several commands per
ALTER TABLE), which no regular expression gets right. Pure functions: no database, no cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ObjectType
from pglast.parser import ParseError

from pipeline.core.errors import UsageError

CONTRACT_MARK = "-- veza:contract"
USES_FILE = "schema-uses.txt"
MIGRATIONS_DIR = "migrations"
_NAME = re.compile(r"^(\d+)_[A-Za-z0-9_]+\.sql$")
_DROPPED_KINDS = {ObjectType.OBJECT_TABLE: "drops table", ObjectType.OBJECT_VIEW: "drops view",
                  ObjectType.OBJECT_MATVIEW: "drops materialized view"}
_RENAMED_KINDS = {ObjectType.OBJECT_TABLE: "renames table", ObjectType.OBJECT_VIEW: "renames view",
                  ObjectType.OBJECT_COLUMN: "renames column"}
_COLUMN_CMDS = {AlterTableType.AT_DropColumn: "drops column", AlterTableType.AT_AlterColumnType: "changes the type of"}


@dataclass(frozen=True)
class MigrationFile:
    """One migration: `<dir>/NNNN_what.sql` (the naming the service's migrator reads: store.go Migrations)."""

    version: int
    path: Path
    sql: str
    shown: str = ""      # how messages name it (relative to the project root when read_migrations had one)

    @property
    def label(self) -> str:
        return self.shown or str(self.path)

    @property
    def contract(self) -> bool:
        """Marked as a contract step: its first non-empty line is the marker."""
        first = next((ln.strip() for ln in self.sql.splitlines() if ln.strip()), "")
        return first.lower() == CONTRACT_MARK


@dataclass(frozen=True)
class Removal:
    """A statement that removes or reshapes `objects` ("table" or "table.column", lower case, schema dropped)."""

    file: str            # as messages name it (MigrationFile.shown)
    line: int
    what: str            # "drops table", "renames column", …
    objects: tuple[str, ...]
    statement: str       # the statement's text, on one line

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def read_migrations(directory: Path, root: Path | None = None) -> list[MigrationFile]:
    """The migrations of `directory`, ordered by version ([] when it does not exist); messages name them relative
    to `root` when given. UsageError (exit 2) for a `.sql` file not named NNNN_what.sql (NNNN > 0) or two files
    of one version."""
    if not directory.is_dir():
        return []
    out: dict[int, MigrationFile] = {}
    for path in sorted(directory.glob("*.sql")):
        shown = str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)
        m = _NAME.match(path.name)
        if not m or int(m.group(1)) <= 0:
            raise UsageError(f"migration {shown}: not named NNNN_what.sql (NNNN > 0)",
                             "rename it, e.g. 0002_add_genre.sql")
        version = int(m.group(1))
        if version in out:
            raise UsageError(f"migrations {out[version].path.name} and {path.name} share version {version}",
                             f"renumber one of them in {directory}")
        out[version] = MigrationFile(version, path, path.read_text(), shown)
    return [out[v] for v in sorted(out)]


def parse_uses(text: str, where: str) -> set[str]:
    """A `schema-uses.txt`: one `table` or `table.column` per line that the version's queries read or write
    (`#` starts a comment). A table listed alone uses all of its columns. Names are lower-cased (unquoted SQL
    identifiers). UsageError naming the line for anything else."""
    out: set[str] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", line):
            raise UsageError(f"{where}:{n}: '{line}' is not a table or table.column name",
                             "write one `table` or `table.column` per line")
        out.add(line.lower())
    return out


def _one_line(sql: str) -> str:
    return " ".join(sql.split())


def _rel(r: ast.RangeVar | None) -> str:
    return str(r.relname).lower() if r is not None and r.relname else "?"


def _obj_name(obj: object) -> str:
    """The last name of a DropStmt object (a tuple of String nodes: schema, name)."""
    parts = obj if isinstance(obj, tuple) else (obj,)
    last = parts[-1]
    return str(getattr(last, "sval", last)).lower()


def _line_of(sql: str, offset: int) -> int:
    """1-based line of the first non-blank character at or after `offset`."""
    rest = sql[offset:]
    skipped = len(rest) - len(rest.lstrip())
    return sql.count("\n", 0, offset + skipped) + 1


def statements(mig: MigrationFile) -> list[tuple[int, str, ast.Node]]:
    """(line, text, parse tree) of each statement of a migration. UsageError naming the file and line when
    PostgreSQL's parser rejects it."""
    try:
        raws = parse_sql(mig.sql)
    except ParseError as exc:
        at = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0   # (message, offset)
        line = mig.sql.count("\n", 0, at) + 1
        raise UsageError(f"migration {mig.label}:{line}: PostgreSQL cannot parse it ({exc.args[0]})",
                         "fix the SQL") from None
    out = []
    for raw in raws:
        start = int(raw.stmt_location or 0)
        length = int(raw.stmt_len or 0)
        text = mig.sql[start:start + length] if length else mig.sql[start:]
        if raw.stmt is not None:
            out.append((_line_of(mig.sql, start), _one_line(text), raw.stmt))
    return out


def _refused_in_transaction(stmt: ast.Node) -> str:
    """Why PostgreSQL will not run `stmt` inside a transaction block ("" when it will)."""
    if isinstance(stmt, ast.IndexStmt) and stmt.concurrent:
        return "CREATE INDEX CONCURRENTLY cannot run inside a transaction"
    if isinstance(stmt, ast.ReindexStmt) and any(
            getattr(getattr(p, "defname", None), "lower", lambda: "")() == "concurrently" for p in stmt.params or ()):
        return "REINDEX CONCURRENTLY cannot run inside a transaction"
    if isinstance(stmt, ast.DropStmt) and stmt.concurrent:
        return "DROP INDEX CONCURRENTLY cannot run inside a transaction"
    kinds = {ast.VacuumStmt: "VACUUM", ast.CreatedbStmt: "CREATE DATABASE", ast.DropdbStmt: "DROP DATABASE",
             ast.AlterSystemStmt: "ALTER SYSTEM", ast.CreateTableSpaceStmt: "CREATE TABLESPACE",
             ast.TransactionStmt: "a transaction command (BEGIN/COMMIT/ROLLBACK)"}
    for kind, name in kinds.items():
        if isinstance(stmt, kind):
            return f"{name} cannot run inside the migration's transaction"
    return ""


def removals(mig: MigrationFile) -> list[Removal]:
    """The statements of `mig` that remove or reshape a table or column (the contract steps). UsageError
    (exit 2, naming the file, line and statement) for a statement no migration may hold: one PostgreSQL will not
    run in a transaction, or a DO block."""
    out: list[Removal] = []
    for line, text, stmt in statements(mig):
        where = f"{mig.label}:{line}"
        why = _refused_in_transaction(stmt)
        if why:
            raise UsageError(f"migration {where}: `{text[:120]}`: {why} (each migration is one transaction)",
                             "run it out of band, or use the transactional form (e.g. CREATE INDEX without "
                             "CONCURRENTLY)")
        if isinstance(stmt, ast.DoStmt):
            raise UsageError(f"migration {where}: `{text[:120]}`: a DO block cannot be checked for expand/contract",
                             "write its statements as plain SQL")
        if isinstance(stmt, ast.DropStmt) and stmt.removeType in _DROPPED_KINDS:
            objs = tuple(_obj_name(o) for o in stmt.objects or ())
            kind = ObjectType(stmt.removeType)
            out.append(Removal(mig.label, line, _DROPPED_KINDS[kind], objs, text))
        elif isinstance(stmt, ast.RenameStmt) and stmt.renameType in _RENAMED_KINDS:
            renamed = ObjectType(stmt.renameType)
            table = _rel(stmt.relation)
            obj = f"{table}.{str(stmt.subname).lower()}" if renamed is ObjectType.OBJECT_COLUMN else table
            out.append(Removal(mig.label, line, _RENAMED_KINDS[renamed], (obj,), text))
        elif isinstance(stmt, ast.AlterTableStmt):
            table = _rel(stmt.relation)
            for cmd in stmt.cmds or ():
                sub = cmd.subtype if isinstance(cmd, ast.AlterTableCmd) else None
                what = _COLUMN_CMDS.get(AlterTableType(sub)) if sub is not None else None
                if what:
                    column = f"{table}.{str(cmd.name).lower()}"
                    out.append(Removal(mig.label, line, what, (column,), text))
    return out


def still_used(removal: Removal, uses: set[str]) -> list[str]:
    """The entries of a `schema-uses.txt` that the removal takes away: the object itself, every column of a
    table it drops or renames, and the table of a column listed as a whole table."""
    hit: list[str] = []
    for obj in removal.objects:
        table = obj.split(".", 1)[0]
        for u in sorted(uses):
            if u == obj or ("." not in obj and u.startswith(f"{table}.")) or ("." in obj and u == table):
                hit.append(u)
    return hit


def check_static(migrations: Sequence[MigrationFile]) -> list[Removal]:
    """The rules that need nothing but the files: every statement parses and can run in a transaction, and every
    removal is in a file marked `-- veza:contract`. Returns the marked removals (checked later against the
    running version: check_running). UsageError (exit 2) naming the file, line and statement of the first
    unmarked removal."""
    marked: list[Removal] = []
    for mig in migrations:
        for r in removals(mig):
            if not mig.contract:
                raise UsageError(f"migration {r.where()}: `{r.statement[:160]}` {r.what} "
                                 f"{', '.join(r.objects)}, which the running version may still use "
                                 "(expand/contract)",
                                 f"keep it for a later release: stop using it first, then start {mig.path.name} "
                                 f"with the line `{CONTRACT_MARK}`")
            marked.append(r)
    return marked


def check_running(marked: Iterable[Removal], running_uses: set[str] | None, uses_source: str) -> None:
    """A marked contract step is refused while the running version still uses what it removes.
    `running_uses` None: no version runs (a first install), nothing to protect. UsageError (exit 2) naming the
    file, line, statement and the entries of `uses_source` (where the running version's declaration was read)."""
    if running_uses is None:
        return
    for r in marked:
        hit = still_used(r, running_uses)
        if hit:
            raise UsageError(f"migration {r.where()}: `{r.statement[:160]}` {r.what} {', '.join(r.objects)}, "
                             f"but the running version still uses {', '.join(hit)} ({uses_source})",
                             "release a version that no longer uses it first (and drop it from "
                             f"{USES_FILE}), then this contract step")
