#!/usr/bin/env python3
"""Second-opinion decoder for PostgreSQL changes: test_decoding text -> tidemark's JSON forms.

    pg_test_decoding.py --dsn 'host=127.0.0.1 port=5432 user=postgres dbname=X' --slot SLOT

Peeks (does not consume) every change of SLOT, a slot created with the
`test_decoding` plugin, and prints one JSON object per row change to stdout:

    {"table":"public.t","op":"c"|"u"|"d"|"t","before":{...}|null,"after":{...}|null,"unchanged":[...]}

Values are converted from their Postgres text output form (the type name in
brackets, resolved through pg_type on the same connection, domains to their base
type) into the forms of README "Postgres value forms". The session pins
TimeZone=UTC, DateStyle=ISO, bytea_output=hex and extra_float_digits=1, as
tidemark's do. Anything it cannot parse stops it with exit status 1 and one line
on stderr naming the table, column and type; nothing is skipped silently.

What the output holds, as test_decoding gives it (not always what tidemark emits):
- `before` is the old tuple test_decoding printed: the old key (REPLICA IDENTITY
  DEFAULT/INDEX, only when the key changed for an UPDATE) or the old row (FULL);
  `null` when none was printed. test_decoding leaves NULL columns out of old
  tuples, so a FULL `before` lacks the columns that were NULL (tidemark has them
  as `null`).
- `unchanged` lists the columns printed as `unchanged-toast-datum`; they are
  absent from `after`. An unchanged TOAST datum in an old tuple is an error.
- TRUNCATE of several tables gives one `"op":"t"` object per table, in the order
  printed, with `before`/`after` null.
- `"table"` is `schema.table` with identifier quoting removed.
- Array bounds decorations (`[0:1]={7,8}`) are dropped: the JSON form is the
  elements only.
- BEGIN/COMMIT lines and logical messages (`message: ...`, from
  pg_logical_emit_message) are not row changes and are skipped.
- Dates and timestamps before year 1 use ISO 8601 astronomical years (1 BC =
  0000, 2 BC = -0001); years above 9999 keep Postgres's digits.
"""

import argparse
import base64
import json
import re
import sys

# Built-in type OIDs with a JSON form other than the text string.
INT_OIDS = {20, 21, 23, 26, 28}  # int8, int2, int4, oid, xid
KIND_BY_OID = {
    1700: "numeric",
    700: "float",
    701: "float",
    16: "bool",
    17: "bytea",
    1082: "date",
    1083: "time",
    1114: "timestamp",
    1184: "timestamptz",
    114: "json",
    3802: "jsonb",
}
for _oid in INT_OIDS:
    KIND_BY_OID[_oid] = "int"

SESSION = [
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO'",
    "SET bytea_output = 'hex'",
    "SET extra_float_digits = 1",
    "SET client_encoding = 'UTF8'",
]

UNQUOTED_IDENT = re.compile(r"[a-z_][a-z0-9_]*")
INT_RE = re.compile(r"-?[0-9]+")
NUMERIC_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?")
FLOAT_RE = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")
BYTEA_RE = re.compile(r"\\x((?:[0-9a-fA-F]{2})*)")
DATE_RE = re.compile(r"([0-9]{4,})-([0-9]{2})-([0-9]{2})( BC)?")
TIME_RE = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?")
TIMESTAMP_RE = re.compile(
    r"([0-9]{4,})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?"
    r"([+-][0-9]{2}(?::[0-9]{2}){0,2})?( BC)?"
)
BOUNDS_RE = re.compile(r"(?:\[-?[0-9]+:-?[0-9]+\])+=")
BEGIN_RE = re.compile(r"BEGIN( [0-9]+)?")
COMMIT_RE = re.compile(r"COMMIT( [0-9]+)?( \(at .*\))?", re.S)


class Failure(Exception):
    """One line for stderr; the run stops."""


class BadValue(Exception):
    """A value that does not parse as its type's text form."""


def fail_value(table, column, type_name, why, text):
    shown = repr(text)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return Failure(f"table {table} column {column} type {type_name}: {why}: {shown}")


# ---------------------------------------------------------------- types


class TypeInfo:
    """kind: int, numeric, float, bool, bytea, date, time, timestamp, timestamptz,
    json, jsonb, text or array (then elem and delim are set)."""

    def __init__(self, kind, elem=None, delim=","):
        self.kind = kind
        self.elem = elem
        self.delim = delim


class Types:
    """Type names as test_decoding prints them (format_type_be) -> TypeInfo,
    looked up in pg_type through the decoding session itself."""

    def __init__(self, conn):
        self.conn = conn
        self.by_name = {}
        self.by_oid = {}

    def named(self, name):
        info = self.by_name.get(name)
        if info is None:
            row = self.conn.execute("SELECT to_regtype(%s)::oid", (name,)).fetchone()
            if row is None or row[0] is None:
                raise BadValue(f"type {name!r} is not in pg_type")
            info = self.by_name[name] = self.of_oid(row[0], set())
        return info

    def of_oid(self, oid, seen):
        if oid in self.by_oid:
            return self.by_oid[oid]
        if oid in seen:
            raise BadValue(f"type oid {oid} refers to itself")
        seen.add(oid)
        row = self.conn.execute(
            "SELECT typtype, typbasetype, typelem, typdelim, typinput = 'array_in'::regproc"
            " FROM pg_type WHERE oid = %s",
            (oid,),
        ).fetchone()
        if row is None:
            raise BadValue(f"type oid {oid} is not in pg_type")
        typtype, basetype, elem, _, is_array = row
        if typtype == "d":
            info = self.of_oid(basetype, seen)
        elif is_array:
            delim = self.conn.execute("SELECT typdelim FROM pg_type WHERE oid = %s", (elem,)).fetchone()
            if delim is None:
                raise BadValue(f"array element type oid {elem} is not in pg_type")
            info = TypeInfo("array", self.of_oid(elem, seen), delim[0])
        else:
            info = TypeInfo(KIND_BY_OID.get(oid, "text"))
        self.by_oid[oid] = info
        return info


# ---------------------------------------------------------------- values


def year_iso(digits, bc):
    """Postgres year digits (with ' BC') -> ISO 8601 astronomical year."""
    year = int(digits)
    if not bc:
        return digits if len(digits) > 4 else f"{year:04d}"
    if year == 0:
        raise BadValue("year 0 BC")
    astro = 1 - year
    return f"-{-astro:04d}" if astro < 0 else f"{astro:04d}"


def frac6(frac):
    return (frac or "").ljust(6, "0")


def convert(text, info):
    """A value's text output form -> its JSON form (BadValue when it does not parse)."""
    kind = info.kind
    if kind == "text" or kind == "json" or kind == "jsonb":
        return text
    if kind == "int":
        if not INT_RE.fullmatch(text):
            raise BadValue("not an integer")
        return int(text)
    if kind == "numeric":
        if text in ("NaN", "Infinity", "-Infinity") or NUMERIC_RE.fullmatch(text):
            return text
        raise BadValue("not a numeric")
    if kind == "float":
        if text in ("NaN", "Infinity", "-Infinity"):
            return text
        if not FLOAT_RE.fullmatch(text):
            raise BadValue("not a float")
        value = float(text)
        if value != value or value in (float("inf"), float("-inf")):
            raise BadValue("float out of range")
        return value
    if kind == "bool":
        if text in ("t", "true"):
            return True
        if text in ("f", "false"):
            return False
        raise BadValue("not a boolean")
    if kind == "bytea":
        m = BYTEA_RE.fullmatch(text)
        if not m:
            raise BadValue("not hex bytea")
        return base64.b64encode(bytes.fromhex(m.group(1))).decode("ascii")
    if kind == "date":
        if text in ("infinity", "-infinity"):
            return text
        m = DATE_RE.fullmatch(text)
        if not m:
            raise BadValue("not an ISO date")
        return f"{year_iso(m.group(1), m.group(4))}-{m.group(2)}-{m.group(3)}"
    if kind == "time":
        m = TIME_RE.fullmatch(text)
        if not m:
            raise BadValue("not a time")
        return f"{m.group(1)}:{m.group(2)}:{m.group(3)}.{frac6(m.group(4))}"
    if kind in ("timestamp", "timestamptz"):
        if text in ("infinity", "-infinity"):
            return text
        m = TIMESTAMP_RE.fullmatch(text)
        if not m:
            raise BadValue("not an ISO timestamp")
        y, mo, d, h, mi, s, frac, offset, bc = m.groups()
        out = f"{year_iso(y, bc)}-{mo}-{d}T{h}:{mi}:{s}.{frac6(frac)}"
        if kind == "timestamp":
            if offset is not None:
                raise BadValue("timestamp without time zone has an offset")
            return out
        if offset != "+00":
            raise BadValue("timestamptz not in UTC (TimeZone is not UTC?)")
        return out + "Z"
    if kind == "array":
        return convert_array(text, info)
    raise BadValue(f"unknown kind {kind}")


def convert_array(text, info):
    """array_out text -> nested JSON array of the element form."""
    pos = 0
    m = BOUNDS_RE.match(text)
    if m:
        pos = m.end()
    delim = info.delim
    elem = info.elem
    n = len(text)

    def parse(pos):
        if pos >= n or text[pos] != "{":
            raise BadValue(f"expected '{{' at {pos}")
        pos += 1
        out = []
        if pos < n and text[pos] == "}":
            return out, pos + 1
        while True:
            if pos >= n:
                raise BadValue("unterminated array")
            c = text[pos]
            if c == "{":
                item, pos = parse(pos)
                out.append(item)
            elif c == '"':
                pos += 1
                buf = []
                while True:
                    if pos >= n:
                        raise BadValue("unterminated quoted element")
                    c = text[pos]
                    if c == "\\":
                        if pos + 1 >= n:
                            raise BadValue("dangling backslash")
                        buf.append(text[pos + 1])
                        pos += 2
                    elif c == '"':
                        pos += 1
                        break
                    else:
                        buf.append(c)
                        pos += 1
                out.append(convert("".join(buf), elem))
            else:
                start = pos
                while pos < n and text[pos] not in (delim, "}"):
                    if text[pos] in '{"\\':
                        raise BadValue(f"unexpected {text[pos]!r} in unquoted element at {pos}")
                    pos += 1
                token = text[start:pos]
                if token == "":
                    raise BadValue(f"empty unquoted element at {start}")
                out.append(None if token == "NULL" else convert(token, elem))
            if pos >= n:
                raise BadValue("unterminated array")
            if text[pos] == delim:
                pos += 1
            elif text[pos] == "}":
                return out, pos + 1
            else:
                raise BadValue(f"expected {delim!r} or '}}' at {pos}")

    value, pos = parse(pos)
    if pos != n:
        raise BadValue(f"trailing text after array at {pos}")
    return value


# ---------------------------------------------------------------- lines


class Line:
    """A cursor over one test_decoding line."""

    def __init__(self, text):
        self.s = text
        self.i = 0

    def rest(self):
        return self.s[self.i :]

    def take(self, literal):
        if self.s.startswith(literal, self.i):
            self.i += len(literal)
            return True
        return False

    def expect(self, literal, what):
        if not self.take(literal):
            raise BadValue(f"expected {literal!r} ({what}) at offset {self.i}: {self.s[self.i:self.i + 40]!r}")

    def ident(self):
        """A quote_identifier()-formed identifier, dequoted."""
        s, i = self.s, self.i
        if i < len(s) and s[i] == '"':
            i += 1
            buf = []
            while True:
                j = s.find('"', i)
                if j < 0:
                    raise BadValue(f"unterminated quoted identifier at offset {self.i}")
                buf.append(s[i:j])
                if s.startswith('""', j):
                    buf.append('"')
                    i = j + 2
                else:
                    self.i = j + 1
                    return "".join(buf)
        m = UNQUOTED_IDENT.match(s, i)
        if not m:
            raise BadValue(f"expected an identifier at offset {i}: {s[i:i + 40]!r}")
        self.i = m.end()
        return m.group(0)

    def type_name(self):
        """format_type_be() output up to the closing ']' (quoted parts and '[]' kept)."""
        s, i = self.s, self.i
        start = i
        while True:
            if i >= len(s):
                raise BadValue(f"unterminated type name at offset {start}")
            c = s[i]
            if c == '"':
                j = i + 1
                while True:
                    j = s.find('"', j)
                    if j < 0:
                        raise BadValue(f"unterminated quoted type name at offset {start}")
                    if s.startswith('""', j):
                        j += 2
                    else:
                        break
                i = j + 1
            elif c == "[" and s.startswith("[]", i):
                i += 2
            elif c == "]":
                self.i = i + 1
                return s[start:i]
            else:
                i += 1

    def value(self):
        """('null'|'toast'|'text', text) for the value after 'name[type]:'."""
        s, i = self.s, self.i
        for word, tag in (("null", "null"), ("unchanged-toast-datum", "toast")):
            if s.startswith(word, i) and (i + len(word) == len(s) or s[i + len(word)] == " "):
                self.i = i + len(word)
                return tag, None
        if s.startswith("'", i) or s.startswith("B'", i):
            i += 1 if s[i] == "'" else 2
            buf = []
            while True:
                j = s.find("'", i)
                if j < 0:
                    raise BadValue(f"unterminated quoted value at offset {self.i}")
                buf.append(s[i:j])
                if s.startswith("''", j):
                    buf.append("'")
                    i = j + 2
                else:
                    self.i = j + 1
                    return "text", "".join(buf)
        j = s.find(" ", i)
        if j < 0:
            j = len(s)
        if j == i:
            raise BadValue(f"empty value at offset {i}")
        self.i = j
        return "text", s[i:j]


def parse_tuple(line, table, types, stop_at_new_tuple):
    """Columns up to the end of the line (or ' new-tuple:') -> (values, unchanged names)."""
    values = {}
    unchanged = []
    while line.i < len(line.s):
        if stop_at_new_tuple and line.rest().startswith(" new-tuple:"):
            break
        line.expect(" ", "column separator")
        name = line.ident()
        line.expect("[", "type of " + name)
        type_name = line.type_name()
        line.expect(":", "value of " + name)
        try:
            tag, text = line.value()
        except BadValue as e:
            raise fail_value(table, name, type_name, str(e), line.rest())
        if name in values or name in unchanged:
            raise fail_value(table, name, type_name, "column printed twice", text)
        if tag == "null":
            values[name] = None
        elif tag == "toast":
            unchanged.append(name)
        else:
            try:
                values[name] = convert(text, types.named(type_name))
            except BadValue as e:
                raise fail_value(table, name, type_name, str(e), text)
    return values, unchanged


def qualified(line):
    schema = line.ident()
    line.expect(".", "schema.table")
    return f"{schema}.{line.ident()}"


def decode(data, types):
    """One row of pg_logical_slot_peek_changes' data column -> a list of output objects."""
    if BEGIN_RE.fullmatch(data) or COMMIT_RE.fullmatch(data) or data.startswith("message: "):
        return []
    line = Line(data)
    if not line.take("table "):
        raise Failure(f"unrecognized test_decoding line: {data[:120]!r}")
    try:
        tables = [qualified(line)]
        while line.take(", "):
            tables.append(qualified(line))
        line.expect(": ", "after the table name")
    except BadValue as e:
        raise Failure(f"cannot parse the table names of {data[:120]!r}: {e}")
    table = tables[0]
    try:
        if line.take("TRUNCATE:"):
            if line.rest() not in (" (no-flags)", " restart_seqs", " cascade", " restart_seqs cascade"):
                raise BadValue(f"unexpected TRUNCATE flags {line.rest()!r}")
            return [{"table": t, "op": "t", "before": None, "after": None, "unchanged": []} for t in tables]
        if len(tables) != 1:
            raise BadValue("several tables on a row change")
        if line.take("INSERT:"):
            op, before, after, unchanged = "c", None, None, []
            if not line.take(" (no-tuple-data)"):
                after, unchanged = parse_tuple(line, table, types, False)
        elif line.take("UPDATE:"):
            op, before = "u", None
            if line.take(" old-key:"):
                before, toast = parse_tuple(line, table, types, True)
                if toast:
                    raise Failure(f"table {table} column {toast[0]}: unchanged-toast-datum in the old tuple")
                line.expect(" new-tuple:", "UPDATE new tuple")
            if line.take(" (no-tuple-data)"):
                after, unchanged = None, []
            else:
                after, unchanged = parse_tuple(line, table, types, False)
        elif line.take("DELETE:"):
            op, after, unchanged = "d", None, []
            if line.take(" (no-tuple-data)"):
                before = None
            else:
                before, toast = parse_tuple(line, table, types, False)
                if toast:
                    raise Failure(f"table {table} column {toast[0]}: unchanged-toast-datum in the old tuple")
        else:
            raise BadValue(f"unknown action {line.rest()[:20]!r}")
        if line.i != len(line.s):
            raise BadValue(f"trailing text {line.rest()[:40]!r}")
    except BadValue as e:
        raise Failure(f"table {table}: cannot parse {data[:120]!r}: {e}")
    return [{"table": table, "op": op, "before": before, "after": after, "unchanged": unchanged}]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="libpq connection string")
    parser.add_argument("--slot", required=True, help="a logical slot using test_decoding")
    args = parser.parse_args()
    try:
        import psycopg
    except ImportError as e:
        print(f"pg_test_decoding: {e} (run scripts/setup-python-tools.sh and use .tools/venv/bin/python)", file=sys.stderr)
        return 1
    sys.stdout.reconfigure(encoding="utf-8")
    try:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            for statement in SESSION:
                conn.execute(statement)
            plugin = conn.execute(
                "SELECT plugin FROM pg_replication_slots WHERE slot_name = %s", (args.slot,)
            ).fetchone()
            if plugin is None:
                raise Failure(f"no replication slot {args.slot!r} in this cluster")
            if plugin[0] != "test_decoding":
                raise Failure(f"slot {args.slot!r} uses plugin {plugin[0]!r}, not test_decoding")
            types = Types(conn)
            with conn.transaction():
                cur = conn.cursor(name="tm_differential_peek")
                cur.itersize = 500
                cur.execute(
                    "SELECT data FROM pg_logical_slot_peek_changes(%s::name, NULL, NULL,"
                    " 'include-xids', '0', 'skip-empty-xacts', '1')",
                    (args.slot,),
                )
                out = sys.stdout
                for (data,) in cur:
                    for obj in decode(data, types):
                        out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
                        out.write("\n")
                cur.close()
        sys.stdout.flush()
    except Failure as e:
        print(f"pg_test_decoding: {e}", file=sys.stderr)
        return 1
    except psycopg.Error as e:
        msg = " ".join(str(e).split())
        print(f"pg_test_decoding: postgres: {msg}", file=sys.stderr)
        return 1
    except Exception as e:
        msg = " ".join(str(e).split())
        print(f"pg_test_decoding: {type(e).__name__}: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
