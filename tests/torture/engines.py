"""What differs between PostgreSQL and MariaDB: schema, audit triggers, SQL forms.

Each engine owns a database per run with three captured tables ``t1``..``t3``
(``id int`` primary key, ``v int``, ``t`` text) and one ``torture_audit`` table
that tidemark does not capture. Row triggers fill the audit table in the same
transaction as the change, so it holds exactly the committed history, in commit
order (the workload runs in one session at a time, so ``aid`` order is commit
order; per key it would be anyway, since row locks serialize writes to a key).
PostgreSQL also audits ``TRUNCATE`` with a statement trigger; MariaDB has no
such trigger, so the harness writes the marker row itself right before it.
"""

import json
import os
import tempfile

from servers import BASE, MY_PORT, PG_PORT, Mariadb, Postgres

TABLES = ("t1", "t2", "t3")


def quote(text):
    """A SQL string literal (the generated text holds no backslashes)."""
    return "'" + text.replace("'", "''") + "'"


def values_sql(rows):
    return ", ".join(f"({i}, {v}, {quote(t)})" for i, v, t in rows)


class AuditRow:
    """One committed row change (or truncate) as the source recorded it."""

    __slots__ = ("aid", "tbl", "op", "old_id", "new_id", "img")

    def __init__(self, aid, tbl, op, old_id, new_id, img):
        self.aid, self.tbl, self.op = aid, tbl, op
        self.old_id, self.new_id, self.img = old_id, new_id, img


def parse_audit_line(line):
    """``aid \\t tbl \\t op \\t old \\t new \\t img-json`` ('' or NULL for none)."""
    aid, tbl, op, old, new, img = line.split("\t", 5)
    none = ("", "NULL")
    return AuditRow(
        int(aid), tbl, op,
        None if old in none else int(old),
        None if new in none else int(new),
        None if img in none else json.loads(img),
    )


class PgEngine:
    name = "pg"

    def __init__(self):
        self.server = Postgres()

    # -- lifecycle ---------------------------------------------------------
    def create_db(self, db, full_identity):
        self.drop_db(db)
        self.server.psql("postgres", f"CREATE DATABASE {db}")
        ddl = [_PG_AUDIT]
        for table in TABLES:
            kind = "varchar(20000)" if table == "t3" else "text"
            ddl.append(f"CREATE TABLE {table} (id int PRIMARY KEY, v int NOT NULL, t {kind});")
            ddl.append(
                f"CREATE TRIGGER audit_row AFTER INSERT OR UPDATE OR DELETE ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION torture_audit_row();"
                f" CREATE TRIGGER audit_truncate AFTER TRUNCATE ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION torture_audit_truncate();"
            )
            if table in full_identity:
                ddl.append(f"ALTER TABLE {table} REPLICA IDENTITY FULL;")
        self.server.psql(db, "\n".join(ddl))

    def drop_db(self, db):
        self.server.psql("postgres", (
            f"SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
            f" WHERE slot_name = '{db}' AND active_pid IS NOT NULL;"), check=False)
        self.server.psql("postgres", (
            f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            f" WHERE slot_name = '{db}' AND NOT active;"), check=False)
        self.server.psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")

    def leftovers(self):
        out = self.query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'tt\\_%'")
        return out.split()

    def source_toml(self, db, seed, snapshot="initial"):
        tables = ", ".join(f'"public.{t}"' for t in TABLES)
        return (f'type = "postgres"\nurl = "postgres://postgres@127.0.0.1:{PG_PORT}/{db}"\n'
                f'tables = [{tables}]\nslot = "{db}"\npublication = "{db}"\n'
                f'snapshot = "{snapshot}"\nheartbeat_interval = "2s"\n')

    def log_end(self, db):
        """Where the WAL ends now (an LSN), comparable with ``cursor_point``."""
        text = self.query(db, "SELECT pg_current_wal_lsn()::text").strip()
        high, low = text.split("/")
        return (int(high, 16) << 32) | int(low, 16)

    @staticmethod
    def cursor_point(text):
        """The end LSN of a cursor's ``pg:<commit LSN>:<end LSN>``, or None."""
        parts = (text or "").split(":")
        try:
            return int(parts[2], 16) if parts[0] == "pg" and len(parts) >= 3 else None
        except ValueError:
            return None

    def streaming(self, db):
        """The run's slot exists, is held by a walsender, and has confirmed a position."""
        out = self.query("postgres", (
            "SELECT active AND confirmed_flush_lsn IS NOT NULL FROM pg_replication_slots"
            f" WHERE slot_name = '{db}'"))
        return out.strip() == "t"

    # -- running SQL -------------------------------------------------------
    def execute(self, db, script):
        self.server.psql(db, script, timeout=180)

    def query(self, db, sql):
        return self.server.psql(db, sql, timeout=180)

    def after_failure(self, db):
        """Nothing can be left behind: a failed session's transaction is gone."""

    def read_audit(self, db):
        out = self.query(db, (
            "COPY (SELECT aid, tbl, op, coalesce(old_id::text, ''), coalesce(new_id::text, ''),"
            " coalesce(img::text, '') FROM torture_audit ORDER BY aid) TO STDOUT"))
        return [parse_audit_line(_unescape_copy(line)) for line in out.splitlines() if line]

    def max_aid(self, db):
        return int(self.query(db, "SELECT coalesce(max(aid), 0) FROM torture_audit").strip())

    def keys(self, db, table):
        return {int(x) for x in self.query(db, f"SELECT id FROM {table}").split()}

    def table_rows(self, db, table):
        out = self.query(db, (f"COPY (SELECT json_build_object('id', id, 'v', v, 't', t)::text"
                              f" FROM {table}) TO STDOUT"))
        return _rows([_unescape_copy(line) for line in out.splitlines() if line])

    # -- SQL forms -----------------------------------------------------------
    def bulk_insert(self, table, rows):
        """``COPY ... FROM STDIN``: its rows share WAL records, and so LSNs."""
        data = "".join(f"{i}\t{v}\t{t}\n" for i, v, t in rows)
        return f"COPY {table} (id, v, t) FROM STDIN;\n{data}\\.\n"

    def truncate(self, table):
        return f"TRUNCATE {table};"

    def add_column(self, table, column, default):
        return f"ALTER TABLE {table} ADD COLUMN {column} int DEFAULT {default};"

    supports_xa = False


class MariadbEngine:
    name = "mariadb"

    def __init__(self):
        self.server = Mariadb()
        self.tmp = BASE / "tmp"

    def create_db(self, db, full_identity):
        del full_identity  # binlog_row_image=FULL logs whole rows for every table
        self.drop_db(db)
        # No daemon reads the binlog between runs: only the current file is kept.
        current = self.server.sql(None, "SHOW MASTER STATUS").split("\t")[0]
        self.server.sql(None, f"PURGE BINARY LOGS TO {quote(current)}")
        kinds = {"t1": "TEXT", "t2": "MEDIUMTEXT", "t3": "VARCHAR(12000)"}
        ddl = [f"CREATE DATABASE {db} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;", f"USE {db};",
               "CREATE TABLE torture_audit (aid bigint AUTO_INCREMENT PRIMARY KEY,"
               " tbl varchar(16) NOT NULL, op char(1) NOT NULL, old_id int NULL,"
               " new_id int NULL, img longtext NULL) ENGINE=InnoDB;"]
        for table in TABLES:
            ddl.append(f"CREATE TABLE {table} (id int PRIMARY KEY, v int NOT NULL,"
                       f" t {kinds[table]}) ENGINE=InnoDB;")
            ddl.extend(_my_triggers(table))
        self.server.sql(None, "\n".join(ddl))

    def drop_db(self, db):
        self.server.sql(None, f"DROP DATABASE IF EXISTS {db}")

    def leftovers(self):
        return self.query(None, "SHOW DATABASES LIKE 'tt\\_%'").split()

    def source_toml(self, db, seed, snapshot="initial"):
        tables = ", ".join(f'"{db}.{t}"' for t in TABLES)
        return (f'type = "mysql"\nurl = "mysql://root@127.0.0.1:{MY_PORT}/{db}"\n'
                f'tables = [{tables}]\nserver_id = {5000 + seed % 100000}\nsnapshot = "{snapshot}"\n')

    def log_end(self, db):
        """Where the binlog ends now: ``(file index, offset)``, as ``cursor_point``."""
        file, pos = self.query(db, "SHOW MASTER STATUS").split("\t")[:2]
        return int(file.rsplit(".", 1)[1]), int(pos)

    @staticmethod
    def cursor_point(text):
        """``(file index, offset)`` of a cursor's ``my:<file>:<offset>``, or None."""
        parts = (text or "").split(":")
        try:
            return (int(parts[1], 16), int(parts[2], 16)) if parts[0] == "my" else None
        except (ValueError, IndexError):
            return None

    def streaming(self, db):
        """Nothing to see from the server's side: the daemon's log says it streams."""
        del db
        return True

    def reset_binlog(self):
        """``RESET MASTER`` on the harness's own server: every binlog goes, numbering
        and offsets start over (positions go down). Forgets the cached binlogs."""
        self.server.sql(None, "RESET MASTER")
        self.__dict__.pop("_binlog_cache", None)

    def execute(self, db, script):
        self.server.sql(db, "SET SESSION innodb_lock_wait_timeout = 10;\n" + script, timeout=180)

    def query(self, db, sql):
        return self.server.sql(db, sql, timeout=180)

    def after_failure(self, db):
        """Rolls back XA transactions a failed session left prepared (they hold locks)."""
        out = self.server.sql(db, "XA RECOVER", check=False)
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 4:
                self.server.sql(db, f"XA ROLLBACK {quote(parts[3])}", check=False)

    def read_audit(self, db):
        out = self.query(db, (
            "SELECT aid, tbl, op, IFNULL(old_id, ''), IFNULL(new_id, ''), IFNULL(img, '')"
            " FROM torture_audit ORDER BY aid"))
        return [parse_audit_line(line) for line in out.splitlines() if line]

    def max_aid(self, db):
        return int(self.query(db, "SELECT IFNULL(MAX(aid), 0) FROM torture_audit").strip())

    def keys(self, db, table):
        return {int(x) for x in self.query(db, f"SELECT id FROM {table}").split()}

    def table_rows(self, db, table):
        out = self.query(db, f"SELECT JSON_OBJECT('id', id, 'v', v, 't', t) FROM {table}")
        return _rows([line for line in out.splitlines() if line])

    def binlog_events(self, file):
        """``[(pos, type, end, info)]`` of a binlog file (None when it is gone), cached."""
        cache = self.__dict__.setdefault("_binlog_cache", {})
        if file not in cache:
            try:
                out = self.server.sql(None, f"SHOW BINLOG EVENTS IN {quote(file)}", timeout=300)
            except Exception:  # noqa: BLE001
                cache[file] = None
                return None
            events = []
            for line in out.splitlines():
                parts = line.split("\t", 5)
                if len(parts) == 6:
                    events.append((int(parts[1]), parts[2], int(parts[4]), parts[5]))
            cache[file] = events
        return cache[file]

    def binlog_boundaries(self, file):
        """Offsets between transactions in a binlog file: ``{offset: what ends there}``."""
        events = self.binlog_events(file)
        if events is None:
            return None
        between = {"Gtid", "Gtid_list", "Binlog_checkpoint", "Rotate", "Stop", "Format_desc"}
        bounds = {4: "file start"}
        for pos, kind, _, info in events:
            if kind in between:
                bounds[pos] = kind
        if events:
            bounds[events[-1][2]] = "file end"
        return bounds

    def event_before(self, file, pos):
        """The binlog event that ends at ``pos``, as ``type info``."""
        for start, kind, end, info in self.binlog_events(file) or []:
            if end == pos:
                return f"{kind} {info[:60]}"
        return "no event ends there"

    def explain(self, position):
        """Which binlog transaction an event position lies in, and how that one ended."""
        try:
            _, index, offset = position.split(":")[:3]
            file, offset = f"mariadb-bin.{int(index, 16):06d}", int(offset, 16)
        except ValueError:
            return None
        events = self.binlog_events(file) or []
        starts = [n for n, e in enumerate(events) if e[1] == "Gtid" and e[0] <= offset]
        if not starts:
            return None
        group = events[starts[-1]]
        if not group[3].startswith(("BEGIN", "XA START")):  # a standalone statement (DDL)
            body = events[starts[-1] + 1:starts[-1] + 2]
            return f"{file}: group '{group[3][:60]}': {body[0][3][:60] if body else '?'}"
        after = [e for e in events[starts[-1] + 1:] if e[1] in ("Xid", "XA_prepare", "Query")]
        ends = [e for e in after if e[1] in ("Xid", "XA_prepare")][:1]
        tail = ""
        if ends and ends[0][1] == "XA_prepare":
            xid = ends[0][3].replace("XA PREPARE ", "")
            later = [e for e in events if e[0] > ends[0][0]]
            later += self.binlog_events(f"mariadb-bin.{int(index, 16) + 1:06d}") or []
            nxt = [e for e in later if e[1] == "Query"
                   and e[3].endswith(xid) and not e[3].startswith("XA END")][:1]
            tail = f", then {nxt[0][3][:40]}" if nxt else ""
        end = f"{ends[0][1]} {ends[0][3][:40]}" if ends else "?"
        return f"{file}: group '{group[3][:60]}' ending {end}{tail}"

    def bulk_insert(self, table, rows, local_infile=False):
        """Multi-row INSERTs of at most ~1 MB each, or ``LOAD DATA LOCAL INFILE``."""
        if local_infile:
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(dir=self.tmp, suffix=".tsv")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.writelines(f"{i}\t{v}\t{t}\n" for i, v, t in rows)
            return (f"LOAD DATA LOCAL INFILE {quote(path)} INTO TABLE {table}"
                    " CHARACTER SET utf8mb4 (id, v, t);\n")
        statements, chunk, size = [], [], 0
        for row in rows:
            chunk.append(row)
            size += len(row[2]) + 24
            if size > 1_000_000:
                statements.append(f"INSERT INTO {table} (id, v, t) VALUES {values_sql(chunk)};")
                chunk, size = [], 0
        if chunk:
            statements.append(f"INSERT INTO {table} (id, v, t) VALUES {values_sql(chunk)};")
        return "\n".join(statements) + "\n"

    def truncate(self, table):
        """MariaDB has no truncate trigger: the marker commits right before it."""
        return (f"INSERT INTO torture_audit (tbl, op) VALUES ('{table}', 't');\n"
                f"TRUNCATE {table};")

    def add_column(self, table, column, default):
        return f"ALTER TABLE {table} ADD COLUMN {column} int DEFAULT {default};"

    supports_xa = True


def _rows(lines):
    rows = {}
    for line in lines:
        row = json.loads(line)
        rows[int(row["id"])] = (int(row["id"]), int(row["v"]), row["t"])
    return rows


def _unescape_copy(line):
    """COPY text format escapes backslashes (JSON escapes are doubled)."""
    if "\\" not in line:
        return line
    out, i = [], 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            nxt = line[i + 1]
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}.get(nxt, nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _my_triggers(table):
    image = "JSON_OBJECT('id', NEW.id, 'v', NEW.v, 't', NEW.t)"
    audit = "INSERT INTO torture_audit (tbl, op, old_id, new_id, img) VALUES"
    return [
        f"CREATE TRIGGER {table}_audit_c AFTER INSERT ON {table} FOR EACH ROW"
        f" {audit} ('{table}', 'c', NULL, NEW.id, {image});",
        f"CREATE TRIGGER {table}_audit_u AFTER UPDATE ON {table} FOR EACH ROW"
        f" {audit} ('{table}', 'u', OLD.id, NEW.id, {image});",
        f"CREATE TRIGGER {table}_audit_d AFTER DELETE ON {table} FOR EACH ROW"
        f" {audit} ('{table}', 'd', OLD.id, NULL, NULL);",
    ]


_PG_AUDIT = """
CREATE TABLE torture_audit (
  aid bigserial PRIMARY KEY,
  xid bigint NOT NULL DEFAULT txid_current(),
  tbl text NOT NULL, op text NOT NULL, old_id int, new_id int, img jsonb);
CREATE FUNCTION torture_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO torture_audit (tbl, op, new_id, img) VALUES (TG_TABLE_NAME, 'c', NEW.id, to_jsonb(NEW));
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO torture_audit (tbl, op, old_id, new_id, img)
      VALUES (TG_TABLE_NAME, 'u', OLD.id, NEW.id, to_jsonb(NEW));
  ELSE
    INSERT INTO torture_audit (tbl, op, old_id) VALUES (TG_TABLE_NAME, 'd', OLD.id);
  END IF;
  RETURN NULL;
END $$;
CREATE FUNCTION torture_audit_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO torture_audit (tbl, op) VALUES (TG_TABLE_NAME, 't');
  RETURN NULL;
END $$;
"""


def make_engine(name):
    return {"pg": PgEngine, "mariadb": MariadbEngine}[name]()
