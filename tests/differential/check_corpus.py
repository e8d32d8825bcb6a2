#!/usr/bin/env python3
"""Checks the type corpus (fixtures/types/{postgres,mariadb}.json) on live servers.

For each manifest it
  1. creates a throwaway source database (tm_h2_*), runs `setup`, creates
     `t (id int primary key, <columns>)` and inserts every row;
  2. copies `t` on the same engine into `t_same` with the same-engine target
     types (validates those types; canonical forms must match there too);
  3. reads every value back in the source engine's text form, converts it by
     hand (the way the events carry it: Postgres text output, arrays as JSON of
     the element forms, MariaDB values with zero dates as NULL, ...) and inserts
     it into a table of the *_target types on the other engine;
  4. compares, for every column with canon_cross != false, the canonical texts
     (canon_pg / canon_mysql) of every row byte for byte (as UTF-8);
  5. inserts each "refused" value on the source (it must be accepted there) and
     reports what the other engine does with it (informational);
  6. evaluates the canonical forms again in a deliberately different session
     (time zone, DateStyle, IntervalStyle, extra_float_digits ...) without the
     manifest's `canon_session` statements and lists the columns whose
     canonical text depends on the session (informational);
  7. drops its databases (unless --keep).

Stdlib only; talks to the servers through the `psql` and `mariadb` CLIs.
Environment: TM_PG_HOST/TM_PG_PORT/TM_PG_USER, TM_MY_HOST/TM_MY_PORT/TM_MY_USER.

    python3 tests/differential/check_corpus.py [--keep] [fixtures/types/postgres.json ...]

Exit code 0 when every cross-engine comparison matched and every refused value
was accepted by its source.
"""

import base64
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MANIFESTS = [
    os.path.join(ROOT, "fixtures", "types", "postgres.json"),
    os.path.join(ROOT, "fixtures", "types", "mariadb.json"),
]

PG_HOST = os.environ.get("TM_PG_HOST", "127.0.0.1")
PG_PORT = os.environ.get("TM_PG_PORT", "5432")
PG_USER = os.environ.get("TM_PG_USER", "postgres")
MY_HOST = os.environ.get("TM_MY_HOST", "127.0.0.1")
MY_PORT = os.environ.get("TM_MY_PORT", "3306")
MY_USER = os.environ.get("TM_MY_USER", "root")

# The session tidemark pins for reading Postgres values (README "Postgres value forms").
PG_SESSION = "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=1 -c bytea_output=hex"
# A session that differs in everything a canonical form might silently depend on.
PG_HOSTILE = ("-c TimeZone=Pacific/Chatham -c DateStyle=SQL,DMY -c IntervalStyle=iso_8601 "
              "-c extra_float_digits=0 -c bytea_output=escape -c lc_monetary=C")
MY_SESSION = "SET SESSION time_zone = '+00:00';"
MY_HOSTILE = "SET SESSION time_zone = '-09:30', SESSION div_precision_increment = 9;"

NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$")


class Failure(Exception):
    pass


# ------------------------------------------------------------------ CLI helpers
def psql(db, sql, options=PG_SESSION, check=True):
    env = dict(os.environ, PGOPTIONS=options, PGCLIENTENCODING="UTF8")
    cmd = ["psql", "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-d", db, "-X", "-q",
           "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t"]
    p = subprocess.run(cmd, input=sql.encode(), capture_output=True, env=env)
    if check and p.returncode != 0:
        raise Failure("psql (%s) failed: %s" % (db, error_lines(p.stderr.decode(errors="replace"))))
    return p.stdout.decode(), p.stderr.decode(errors="replace"), p.returncode


def mariadb(db, sql, check=True):
    cmd = ["mariadb", "-h", MY_HOST, "-P", MY_PORT, "-u", MY_USER, "--batch", "--skip-column-names",
           "--default-character-set=utf8mb4", "--show-warnings"]
    if db:
        cmd.append(db)
    p = subprocess.run(cmd, input=sql.encode(), capture_output=True)
    if check and p.returncode != 0:
        raise Failure("mariadb (%s) failed: %s" % (db, error_lines(p.stderr.decode(errors="replace"))))
    return p.stdout.decode(), p.stderr.decode(errors="replace"), p.returncode


def error_lines(err):
    """The server's error lines, not the echo of a long statement."""
    lines = [ln for ln in err.splitlines() if ln.startswith(("ERROR", "psql:", "DETAIL", "HINT", "LINE"))]
    return "\n".join(short(ln) for ln in lines) if lines else short(err)


def first_error(err):
    lines = [ln for ln in err.splitlines() if ln.startswith("ERROR")] or err.strip().splitlines() or ["?"]
    return lines[0][:200]


def warnings_in(out, err):
    return [line for line in (out + "\n" + err).splitlines() if line.startswith(("Warning", "Note"))]


def pg_ident(name):
    return '"' + name.replace('"', '""') + '"'


def my_ident(name):
    return "`" + name.replace("`", "``") + "`"


def canon(expr, ident):
    return expr.replace("{c}", ident)


# ------------------------------------------------------------------ fetching rows
def pg_hex(expr):
    return "coalesce(encode(convert_to((%s)::text, 'UTF8'), 'hex'), 'N')" % expr


def my_hex(expr):
    return "COALESCE(LOWER(HEX(CONVERT((%s) USING utf8mb4))), 'N')" % expr


def unhex(h):
    return None if h == "N" else bytes.fromhex(h).decode("utf-8")


def parse_rows(out, ncols):
    rows = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != ncols + 1:
            raise Failure("unexpected row shape: %r" % line[:200])
        rows[int(parts[0])] = [p.lower() if p != "N" else "N" for p in parts[1:]]
    return rows


def pg_select(db, table, exprs, options=PG_SESSION, pre=()):
    sql = "".join(s.rstrip(";") + ";\n" for s in pre)
    sql += "SELECT id, %s FROM %s ORDER BY id;" % (", ".join(pg_hex(e) for e in exprs), table)
    out, _, _ = psql(db, sql, options)
    return parse_rows(out, len(exprs))


def my_select(db, table, exprs, session=MY_SESSION, pre=()):
    sql = session + "".join(s.rstrip(";") + ";\n" for s in pre)
    sql += "SELECT id, %s FROM %s ORDER BY id;" % (", ".join(my_hex(e) for e in exprs), table)
    out, _, _ = mariadb(db, sql)
    return parse_rows(out, len(exprs))


# ------------------------------------------------------------------ Postgres arrays -> event JSON
def parse_pg_array(text):
    """Postgres array output -> nested lists of str/None."""
    if text.startswith("["):  # explicit bounds: [0:2]={...}
        text = text[text.index("=") + 1:]
    pos = 0

    def parse():
        nonlocal pos
        assert text[pos] == "{", text
        pos += 1
        items = []
        if text[pos] == "}":
            pos += 1
            return items
        while True:
            ch = text[pos]
            if ch == "{":
                items.append(parse())
            elif ch == '"':
                pos += 1
                buf = []
                while text[pos] != '"':
                    if text[pos] == "\\":
                        pos += 1
                    buf.append(text[pos])
                    pos += 1
                pos += 1
                items.append("".join(buf))
            else:
                start = pos
                while text[pos] not in ",}":
                    pos += 1
                raw = text[start:pos].strip()
                items.append(None if raw == "NULL" else raw)
            if text[pos] == ",":
                pos += 1
                continue
            assert text[pos] == "}", text
            pos += 1
            return items

    return parse()


def micros(t):
    head, rest = t[:8], t[8:]
    frac = ""
    if rest.startswith("."):
        rest = rest[1:]
        n = 0
        while n < len(rest) and rest[n].isdigit():
            n += 1
        frac, rest = rest[:n], rest[n:]
    return head + "." + frac.ljust(6, "0") + rest


def element_form(kind, s):
    """One array element's form in the events (README "Postgres value forms")."""
    if s is None:
        return None
    if kind in ("smallint", "integer", "bigint", "oid"):
        return int(s)
    if kind in ("real", "double precision"):
        f = float(s)
        return f if f == f and f not in (float("inf"), float("-inf")) else s
    if kind == "boolean":
        return s == "t"
    if kind == "bytea":
        return base64.b64encode(bytes.fromhex(s[2:])).decode()
    if kind == "time":
        return micros(s)
    if kind in ("timestamp", "timestamptz"):
        if s in ("infinity", "-infinity"):
            return s
        zulu = kind == "timestamptz"
        if zulu:
            assert s.endswith("+00"), s
            s = s[:-3]
        date, time = s.split(" ", 1)
        return date + "T" + micros(time) + ("Z" if zulu else "")
    return s  # numeric (exact digits), date, json/jsonb (text), text, enums, ...


def array_json(src_type, text):
    kind = src_type[:-2].strip()
    kind = {"int": "integer", "int4": "integer", "int8": "bigint", "int2": "smallint", "float8": "double precision",
            "float4": "real", "bool": "boolean"}.get(kind, kind)

    def walk(v):
        return [walk(x) for x in v] if isinstance(v, list) else element_form(kind, v)

    return json.dumps(walk(parse_pg_array(text)), ensure_ascii=False, separators=(",", ":"))


# ------------------------------------------------------------------ hand conversion
def my_string(s):
    return "''" if s == "" else "CONVERT(X'%s' USING utf8mb4)" % s.encode("utf-8").hex()


def pg_to_mysql_literal(src_type, target, text):
    """A Postgres value (text output, UTC/ISO session) as a MariaDB literal for `target`."""
    if text is None:
        return "NULL"
    src, tgt = src_type.lower(), target.lower()
    if src.endswith("[]"):
        return my_string(array_json(src, text))
    if tgt == "tinyint(1)" and src in ("boolean", "bool"):
        return "1" if text == "t" else "0"
    if tgt.split("(")[0].split()[0] in ("tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "float",
                                        "double"):
        # numbers as they are; NaN/Infinity (refused values only) as the strings the events carry
        return text if NUMBER.match(text) else "'%s'" % text
    if tgt in ("longblob", "blob", "varbinary(255)") and src == "bytea":
        h = text[2:]
        return "X'%s'" % h if h else "''"
    if tgt.startswith("datetime"):
        if src.startswith("timestamptz") or "with time zone" in src:
            if not text.endswith("+00"):
                raise Failure("timestamptz not in UTC: %r" % text)
            text = text[:-3]
        return "'%s'" % text
    if tgt.startswith(("date", "time")):
        return "'%s'" % text
    return my_string(text)


def pg_transfer(src_type, ident):
    """How to read a Postgres value for hand conversion: its text output, except
    real, which is widened to double first: real's shortest text for FLT_MAX
    (3.4028235e+38) reads back as a double above FLT_MAX, which MariaDB's FLOAT
    refuses as out of range."""
    if src_type.lower() in ("real", "float4"):
        return "%s::float8::text" % ident
    if src_type.lower() in ("boolean", "bool"):
        # `bool::text` is `true`/`false`; the output function (and pgoutput) say t/f.
        return "CASE WHEN %s THEN 't' WHEN NOT %s THEN 'f' END" % (ident, ident)
    return "%s::text" % ident


def mysql_transfer(src_type, ident):
    """How to read a MariaDB value for hand conversion (text, or hex for bytes)."""
    src = src_type.lower()
    base = src.split("(")[0].split()[0]
    if "zerofill" in src or base in ("year",):
        return "CAST(%s + 0 AS CHAR)" % ident
    if base in ("tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal", "numeric"):
        return "CAST(%s AS CHAR)" % ident
    if base in ("float", "double", "real"):
        return "CAST(CAST(%s AS DOUBLE) AS CHAR)" % ident
    if base == "bit":
        n = int(src.split("(")[1].split(")")[0]) if "(" in src else 1
        if n == 1:
            return "CAST(%s + 0 AS CHAR)" % ident
        return "LPAD(LOWER(HEX(%s)), %d, '0')" % (ident, 2 * ((n + 7) // 8))
    if base in ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry", "point",
                "linestring", "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection"):
        return "LOWER(HEX(%s))" % ident
    if base in ("date", "datetime", "time", "timestamp"):
        return "CAST(%s AS CHAR)" % ident
    return "CONVERT(%s USING utf8mb4)" % ident


def mysql_to_pg_literal(src_type, target, text):
    """A MariaDB value (as read by mysql_transfer) as a Postgres literal for `target`."""
    if text is None:
        return "NULL"
    tgt = target.lower()
    base = tgt.split("(")[0].strip()
    if base in ("smallint", "integer", "bigint", "numeric", "real", "double precision", "boolean"):
        return "'%s'::%s" % (text, target)
    if base == "bytea":
        return "decode('%s', 'hex')" % text
    if tgt == "text[]":
        if text == "":
            return "'{}'::text[]"
        return "ARRAY[%s]::text[]" % ", ".join(
            "convert_from(decode('%s', 'hex'), 'UTF8')" % m.encode().hex() for m in text.split(","))
    if base in ("date", "timestamp"):
        if text.startswith("0000-00-00"):
            return "NULL"  # MySQL zero dates become NULL in Postgres (README)
        if "with time zone" in tgt:
            return "'%s+00'::%s" % (text, target)
        return "'%s'::%s" % (text, target)
    if base == "time":
        return "'%s'::%s" % (text, target)
    return "convert_from(decode('%s', 'hex'), 'UTF8')::%s" % (text.encode("utf-8").hex(), target)


# ------------------------------------------------------------------ checks
def nrows(columns):
    return max(len(c["values"]) for c in columns)


def row_values(columns, i):
    return [c["values"][i] if i < len(c["values"]) else "NULL" for c in columns]


def compare(label, names, left, right, report, only=None):
    bad = 0
    for rid in sorted(set(left) | set(right)):
        lrow, rrow = left.get(rid), right.get(rid)
        if lrow is None or rrow is None:
            report.append("%s: row %d missing on one side" % (label, rid))
            bad += 1
            continue
        for k, name in enumerate(names):
            if only is not None and name not in only:
                continue
            if lrow[k] != rrow[k]:
                bad += 1
                report.append("%s: %s row %d: %r != %r" % (label, name, rid, short(unhex(lrow[k])), short(unhex(rrow[k]))))
    return bad


def short(v):
    if v is None:
        return None
    return v if len(v) <= 120 else v[:60] + "...(%d chars)..." % len(v) + v[-30:]


def fallback_target(refused, columns, engine_to):
    for c in columns:
        if c["type"].lower() == refused["type"].lower():
            return c["pg_target"] if engine_to == "postgres" else c["mysql_target"]
    t = refused["type"].lower()
    if engine_to == "mysql":
        if t.startswith("numeric("):
            return "decimal" + t[len("numeric"):]
        return "longtext"
    if t.startswith("varchar("):
        return "character varying" + t[len("varchar"):]
    return "text"


def check_postgres(path, m, keep):
    report, info = [], []
    cols, refused = m["columns"], m["refused"]
    names = [c["name"] for c in cols]
    pg_pre = m.get("canon_session", {}).get("postgres", [])
    my_pre = m.get("canon_session", {}).get("mysql", [])
    src, tgt = "tm_h2_pg_src", "tm_h2_pg_tgt"
    psql("postgres", "DROP DATABASE IF EXISTS %s; CREATE DATABASE %s ENCODING 'UTF8' TEMPLATE template0;" % (src, src))
    mariadb(None, "DROP DATABASE IF EXISTS %s; CREATE DATABASE %s CHARACTER SET utf8mb4;" % (tgt, tgt))
    try:
        # 1. source table
        script = [s.rstrip(";") + ";" for s in m["setup"]]
        script.append("CREATE TABLE t (id int PRIMARY KEY, %s);" % ", ".join(
            "%s %s" % (pg_ident(c["name"]), c["type"]) for c in cols))
        for i in range(nrows(cols)):
            script.append("INSERT INTO t (id, %s) VALUES (%d, %s);" % (
                ", ".join(pg_ident(n) for n in names), i + 1, ", ".join(row_values(cols, i))))
        # 2. same-engine copy with pg_target types
        script.append("CREATE TABLE t_same (id int PRIMARY KEY, %s);" % ", ".join(
            "%s %s" % (pg_ident(c["name"]), c["pg_target"]) for c in cols))
        script.append("INSERT INTO t_same SELECT * FROM t;")
        try:
            psql(src, "\n".join(script))
        except Failure as e:
            raise Failure("source load failed: %s\n%s" % (e, pg_diagnose(src, m)))
        # 3. read back, convert by hand, insert on MariaDB
        transfer = pg_select(src, "t", [pg_transfer(c["type"], pg_ident(c["name"])) for c in cols])
        my_script = ["SET SESSION time_zone = '+00:00';",
                     "CREATE TABLE t (id int PRIMARY KEY, %s);" % ", ".join(
                         "%s %s" % (my_ident(c["name"]), c["mysql_target"]) for c in cols)]
        for rid in sorted(transfer):
            lits = [pg_to_mysql_literal(c["type"], c["mysql_target"], unhex(h)) for c, h in zip(cols, transfer[rid])]
            my_script.append("INSERT INTO t (id, %s) VALUES (%d, %s);" % (
                ", ".join(my_ident(n) for n in names), rid, ", ".join(lits)))
        out, err, _ = mariadb(tgt, "\n".join(my_script))
        for w in warnings_in(out, err):
            report.append("MariaDB target insert warning: " + w)
        # 4. canonical forms
        pg_c = pg_select(src, "t", [canon(c["canon_pg"], pg_ident(c["name"])) for c in cols], pre=pg_pre)
        my_c = my_select(tgt, "t", [canon(c["canon_mysql"], my_ident(c["name"])) for c in cols], pre=my_pre)
        cross = {c["name"] for c in cols if c.get("canon_cross", True)}
        compare("pg->mariadb", names, pg_c, my_c, report, only=cross)
        same = pg_select(src, "t_same", [canon(c["canon_pg"], pg_ident(c["name"])) for c in cols], pre=pg_pre)
        compare("pg->pg", names, pg_c, same, report)
        # 6. session dependence
        hostile = pg_select(src, "t", [canon(c["canon_pg"], pg_ident(c["name"])) for c in cols], PG_HOSTILE)
        dep = []
        compare("session", names, pg_c, hostile, dep)
        info.extend(sorted({line.split(": ")[1].split(" row")[0] for line in dep}))
        # 5. refused
        refused_info = check_refused_pg_source(src, tgt, m)
        # never-empty sanity: each column has a non-NULL canonical somewhere
        for k, n in enumerate(names):
            if all(r[k] == "N" for r in pg_c.values()):
                report.append("%s: canonical is NULL in every row" % n)
        return report, info, refused_info, (len(cols), len(pg_c))
    finally:
        if not keep:
            psql("postgres", "DROP DATABASE IF EXISTS %s;" % src)
            mariadb(None, "DROP DATABASE IF EXISTS %s;" % tgt)


def pg_diagnose(db, m):
    """On a failed load: which single values fail."""
    lines = []
    psql(db, "DROP TABLE IF EXISTS t_diag;")
    setup_ok = psql(db, "SELECT 1 FROM pg_type WHERE typname = 'mood';")[0].strip() == "1"
    if not setup_ok:
        for s in m["setup"]:
            _, err, rc = psql(db, s + ";", check=False)
            if rc:
                lines.append("setup %r: %s" % (s, err.strip()))
    for c in m["columns"]:
        _, err, rc = psql(db, "CREATE TABLE t_diag (id int, v %s);" % c["type"], check=False)
        if rc:
            lines.append("%s type %s: %s" % (c["name"], c["type"], err.strip()))
            continue
        for v in c["values"]:
            _, err, rc = psql(db, "INSERT INTO t_diag VALUES (1, %s);" % v, check=False)
            if rc:
                lines.append("%s value %s: %s" % (c["name"], short(v), err.strip()))
        psql(db, "DROP TABLE t_diag;")
    return "\n".join(lines)


def check_refused_pg_source(src, tgt, m):
    out = []
    refused = m["refused"]
    if not refused:
        return out
    script = ["CREATE TABLE r (id int PRIMARY KEY, %s);" % ", ".join(
        "%s %s" % (pg_ident(r["name"]), r["type"]) for r in refused)]
    for i, r in enumerate(refused):
        script.append("INSERT INTO r (id, %s) VALUES (%d, %s);" % (pg_ident(r["name"]), i + 1, r["value"]))
    psql(src, "\n".join(script))  # raises if the source rejects any of them
    texts = pg_select(src, "r", [pg_transfer(r["type"], pg_ident(r["name"])) for r in refused])
    for i, r in enumerate(refused):
        text = unhex(texts[i + 1][i])
        ttype = fallback_target(r, m["columns"], "mysql")
        try:
            lit = pg_to_mysql_literal(r["type"], ttype, text)
        except Failure as e:
            out.append("%s: no MariaDB literal can be built (%s)" % (r["name"], e))
            continue
        o, err, rc = mariadb(tgt, "SET SESSION time_zone = '+00:00'; DROP TABLE IF EXISTS r; CREATE TABLE r (v %s);"
                                  "INSERT INTO r VALUES (%s); SELECT COALESCE(HEX(CONVERT(v USING utf8mb4)), 'N') FROM r;"
                             % (ttype, lit), check=False)
        if rc:
            what = "rejected: " + first_error(err)
        else:
            last = [ln for ln in o.splitlines() if ln and not ln.startswith(("Warning", "Note"))]
            stored = unhex(last[-1].lower()) if last else "?"
            w = warnings_in(o, err)
            what = "ACCEPTED as %s %r%s" % (ttype, short(stored), (" with " + w[0]) if w else "")
        out.append("%s = %s (source text %r) -> MariaDB %s" % (r["name"], short(r["value"]), short(text), what))
    return out


def check_mariadb(path, m, keep):
    report, info = [], []
    cols, refused = m["columns"], m["refused"]
    names = [c["name"] for c in cols]
    pg_pre = m.get("canon_session", {}).get("postgres", [])
    my_pre = m.get("canon_session", {}).get("mysql", [])
    src, tgt = "tm_h2_my_src", "tm_h2_my_tgt"
    mariadb(None, "DROP DATABASE IF EXISTS %s; CREATE DATABASE %s CHARACTER SET utf8mb4;" % (src, src))
    psql("postgres", "DROP DATABASE IF EXISTS %s; CREATE DATABASE %s ENCODING 'UTF8' TEMPLATE template0;" % (tgt, tgt))
    try:
        setup = [s.rstrip(";") + ";" for s in m["setup"]]
        script = list(setup)
        script.append("CREATE TABLE t (id int PRIMARY KEY, %s);" % ", ".join(
            "%s %s" % (my_ident(c["name"]), c["type"]) for c in cols))
        for i in range(nrows(cols)):
            script.append("INSERT INTO t (id, %s) VALUES (%d, %s);" % (
                ", ".join(my_ident(n) for n in names), i + 1, ", ".join(row_values(cols, i))))
        script.append("CREATE TABLE t_same (id int PRIMARY KEY, %s);" % ", ".join(
            "%s %s" % (my_ident(c["name"]), c["mysql_target"]) for c in cols))
        script.append("INSERT INTO t_same SELECT * FROM t;")
        try:
            out, err, _ = mariadb(src, "\n".join(script))
        except Failure as e:
            raise Failure("source load failed: %s\n%s" % (e, my_diagnose(src, m)))
        for w in warnings_in(out, err):
            report.append("MariaDB source insert warning: " + w)
        transfer = my_select(src, "t", [mysql_transfer(c["type"], my_ident(c["name"])) for c in cols])
        pg_script = ["CREATE TABLE t (id int PRIMARY KEY, %s);" % ", ".join(
            "%s %s" % (pg_ident(c["name"]), c["pg_target"]) for c in cols)]
        for rid in sorted(transfer):
            lits = [mysql_to_pg_literal(c["type"], c["pg_target"], unhex(h)) for c, h in zip(cols, transfer[rid])]
            pg_script.append("INSERT INTO t (id, %s) VALUES (%d, %s);" % (
                ", ".join(pg_ident(n) for n in names), rid, ", ".join(lits)))
        psql(tgt, "\n".join(pg_script))
        my_c = my_select(src, "t", [canon(c["canon_mysql"], my_ident(c["name"])) for c in cols], pre=my_pre)
        pg_c = pg_select(tgt, "t", [canon(c["canon_pg"], pg_ident(c["name"])) for c in cols], pre=pg_pre)
        cross = {c["name"] for c in cols if c.get("canon_cross", True)}
        compare("mariadb->pg", names, my_c, pg_c, report, only=cross)
        same = my_select(src, "t_same", [canon(c["canon_mysql"], my_ident(c["name"])) for c in cols], pre=my_pre)
        compare("mariadb->mariadb", names, my_c, same, report)
        dep = []
        hostile = my_select(src, "t", [canon(c["canon_mysql"], my_ident(c["name"])) for c in cols], MY_HOSTILE)
        compare("session", names, my_c, hostile, dep)
        hostile_pg = pg_select(tgt, "t", [canon(c["canon_pg"], pg_ident(c["name"])) for c in cols], PG_HOSTILE)
        compare("session", names, pg_c, hostile_pg, dep)
        info.extend(sorted({line.split(": ")[1].split(" row")[0] for line in dep}))
        refused_info = check_refused_my_source(src, tgt, m)
        for k, n in enumerate(names):
            if all(r[k] == "N" for r in my_c.values()):
                report.append("%s: canonical is NULL in every row" % n)
        return report, info, refused_info, (len(cols), len(my_c))
    finally:
        if not keep:
            mariadb(None, "DROP DATABASE IF EXISTS %s;" % src)
            psql("postgres", "DROP DATABASE IF EXISTS %s;" % tgt)


def my_diagnose(db, m):
    lines = []
    setup = " ".join(s.rstrip(";") + ";" for s in m["setup"])
    for c in m["columns"]:
        _, err, rc = mariadb(db, "DROP TABLE IF EXISTS t_diag; CREATE TABLE t_diag (id int, v %s);" % c["type"], check=False)
        if rc:
            lines.append("%s type %s: %s" % (c["name"], c["type"], err.strip()))
            continue
        for v in c["values"]:
            _, err, rc = mariadb(db, "%s INSERT INTO t_diag VALUES (1, %s);" % (setup, v), check=False)
            if rc:
                lines.append("%s value %s: %s" % (c["name"], short(v), err.strip()))
    mariadb(db, "DROP TABLE IF EXISTS t_diag;", check=False)
    return "\n".join(lines)


def check_refused_my_source(src, tgt, m):
    out = []
    refused = m["refused"]
    if not refused:
        return out
    setup = [s.rstrip(";") + ";" for s in m["setup"]]
    script = setup + ["CREATE TABLE r (id int PRIMARY KEY, %s);" % ", ".join(
        "%s %s" % (my_ident(r["name"]), r["type"]) for r in refused)]
    for i, r in enumerate(refused):
        script.append("INSERT INTO r (id, %s) VALUES (%d, %s);" % (my_ident(r["name"]), i + 1, r["value"]))
    o, err, _ = mariadb(src, "\n".join(script))  # raises if the source rejects any of them
    for w in warnings_in(o, err):
        out.append("SOURCE WARNING (value altered on the source?): " + w)
    texts = my_select(src, "r", [mysql_transfer(r["type"], my_ident(r["name"])) for r in refused])
    for i, r in enumerate(refused):
        text = unhex(texts[i + 1][i])
        ttype = fallback_target(r, m["columns"], "postgres")
        try:
            lit = mysql_to_pg_literal(r["type"], ttype, text)
        except Failure as e:
            out.append("%s: cannot even build a literal (%s)" % (r["name"], e))
            continue
        o, err, rc = psql(tgt, "DROP TABLE IF EXISTS r; CREATE TABLE r (v %s); INSERT INTO r VALUES (%s); "
                               "SELECT coalesce(v::text, 'NULL') FROM r;" % (ttype, lit), check=False)
        what = ("rejected: " + first_error(err)) if rc else "ACCEPTED as %s %r" % (ttype, short(o.strip()))
        out.append("%s = %s (source text %r) -> Postgres %s" % (r["name"], short(r["value"]), short(text), what))
    return out


def main(argv):
    keep = "--keep" in argv
    paths = [a for a in argv if not a.startswith("--")] or DEFAULT_MANIFESTS
    failed = 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
        engine = m.get("engine") or ("mariadb" if "mariadb" in os.path.basename(path) else "postgres")
        print("== %s (%s source)" % (os.path.relpath(path, ROOT), engine))
        try:
            if engine == "postgres":
                report, info, refused_info, (ncol, nrow) = check_postgres(path, m, keep)
            else:
                report, info, refused_info, (ncol, nrow) = check_mariadb(path, m, keep)
        except Failure as e:
            print("FAILED:", e)
            failed += 1
            continue
        cross = [c["name"] for c in m["columns"] if not c.get("canon_cross", True)]
        print("%d columns x %d rows; %d refused values; canon_cross=false: %s" % (
            ncol, nrow, len(m["refused"]), ", ".join(cross) or "none"))
        for line in refused_info:
            print("  refused:", line)
        if info:
            print("  canonical text depends on the session for:", ", ".join(info))
        for line in report:
            print("  MISMATCH", line)
        bad_refused = [ln for ln in refused_info if ln.startswith("SOURCE WARNING")]
        if report or bad_refused:
            failed += 1
            print("FAILED: %d problems" % (len(report) + len(bad_refused)))
        else:
            print("ok")
    print("%d passed, %d failed" % (len(paths) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
