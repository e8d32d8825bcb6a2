#!/usr/bin/env python3
"""Second-opinion decoder for MySQL/MariaDB row events: python-mysql-replication -> tidemark's JSON forms.

    mysql_binlog.py --host 127.0.0.1 --port 3306 --user root [--password ''] \\
        --server-id N --log-file F --log-pos P --only-schema DB

Reads the binlog from F:P to its current end (non-blocking) with
pymysqlreplication's BinLogStreamReader, keeps the WRITE/UPDATE/DELETE rows
events of schema DB, and prints one JSON object per row to stdout:

    {"table":"db.t","op":"c"|"u"|"d","before":{...}|null,"after":{...}|null,"unchanged":[...]}

`before` is the before image (u, d), `after` the after image (c, u). Columns a
non-FULL row image leaves out are absent; those left out of an after image are
listed in `unchanged`. Values take the forms of README "MySQL / MariaDB".
The server must log `binlog_row_metadata = FULL` (column names, signedness,
charsets, ENUM/SET labels come from the TABLE_MAP events); the script checks it
and stops otherwise. Errors (connection, a rows event the library cannot parse,
compressed rows events it would skip) stop it with exit status 1 and one line on
stderr.

How values are read:
- Text columns: the library is told to leave every string undecoded (its
  charset_to_encoding hook names no codec, so it returns the bytes) and this
  script decodes them by the column's collation from the TABLE_MAP: utf8mb4 /
  utf8mb3 strictly as UTF-8, latin1 as MySQL's latin1 (cp1252 with 0x81, 0x8D,
  0x8F, 0x90, 0x9D as the C1 controls U+0081.. -- Python's cp1252 codec rejects
  those bytes and the library would stop on them), ascii strictly. The library
  decodes nothing else itself, so every value below is its reading of the bytes.
- BINARY(n): the binlog drops trailing zero bytes; they are put back (padded to n).
- YEAR: the library adds 1900 to the stored byte, so the zero year (byte 0) comes
  back as 1900 and is output as 0 (1900 itself is not a valid YEAR).
- TIMESTAMP: the library gives seconds 0 as 1970-01-01 00:00:00, which is the
  zero timestamp (the smallest real TIMESTAMP is 1970-01-01 00:00:01 UTC), so it
  is output as "0000-00-00T00:00:00.000000Z".
- FLOAT: the 32-bit value widened to a double, printed exactly (1.1 -> 1.100000023841858).

Values output as {"__undecodable__": "<reason>"} because pymysqlreplication
1.0.17 cannot represent them faithfully (never guessed):
- DATE / DATETIME zero or with a zero or invalid part ('0000-00-00',
  '2026-00-15', '0000-00-00 00:00:00', ...): the library returns None for all of
  them (none_source "out of date range" / "out of datetime2 range"), so the value
  is lost, and '0000-00-00' cannot be told from '2026-00-15'.
- TIME(n>0) negative with a nonzero fraction ('-00:00:00.000001'): the library
  reads the fraction as a separate positive number and gets another value
  (-(s + 1 - frac)). Negative TIME values with a zero fraction, and every TIME(0),
  decode correctly and are output.
- Old-format TIME (pre-5.6 binary format, type 11) that is negative: read as an
  unsigned number (shows as hours >= 839).
- ENUM/SET labels of a column whose charset is not UTF-8: the library decodes
  labels as UTF-8 and turns undecodable ones into "", so a non-ASCII label, or an
  empty one when "" is ambiguous, cannot be trusted (utf8mb3/utf8mb4 labels and
  ASCII labels of latin1/ascii/binary columns are exact).
- Text in a charset other than utf8mb4, utf8mb3, latin1, ascii and binary, or a
  collation id the library does not know, or bytes that are not valid in the
  column's charset.
- MySQL 8 binary JSON (type 245): the library returns Python objects, not the
  JSON text.
- None for any other reason (a library path that loses the value).
A rows event the library cannot parse at all (e.g. an invalid DATE like
'2026-02-31' stored under ALLOW_INVALID_DATES raises in the library) stops the
script with an error naming the table and position instead.
"""

import argparse
import base64
import socket
import uuid
import datetime
import decimal
import json
import sys

# MariaDB's compressed rows events (log_bin_compress) and MySQL's
# TRANSACTION_PAYLOAD: pymysqlreplication does not decode them, so rows inside
# would be skipped silently. Their presence is an error.
UNREADABLE_ROW_EVENTS = {
    40: "TRANSACTION_PAYLOAD_EVENT (binlog_transaction_compression)",
    166: "WRITE_ROWS_COMPRESSED_EVENT_V1",
    167: "UPDATE_ROWS_COMPRESSED_EVENT_V1",
    168: "DELETE_ROWS_COMPRESSED_EVENT_V1",
    169: "WRITE_ROWS_COMPRESSED_EVENT",
    170: "UPDATE_ROWS_COMPRESSED_EVENT",
    171: "DELETE_ROWS_COMPRESSED_EVENT",
}

UTF8_CHARSETS = {"utf8mb4", "utf8mb3", "utf8"}
# Single-byte charsets whose ASCII range is ASCII: ENUM/SET labels that are
# non-empty ASCII decode the same from UTF-8.
ASCII_COMPATIBLE = {"latin1", "ascii", "binary"}


def mysql_latin1(raw):
    """MySQL's latin1: cp1252, with the five bytes cp1252 leaves undefined as C1 controls."""
    return raw.decode("cp1252", errors="tm_latin1_holes")


def _latin1_holes(err):
    bad = err.object[err.start : err.end]
    if all(b in (0x81, 0x8D, 0x8F, 0x90, 0x9D) for b in bad):
        return "".join(chr(b) for b in bad), err.end
    raise err


class Failure(Exception):
    """One line for stderr; the run stops."""


def undecodable(reason):
    return {"__undecodable__": reason}


def fmt_time(td):
    """timedelta -> [-]HH:MM:SS.ffffff (hours may exceed 24)."""
    total = td // datetime.timedelta(microseconds=1)
    sign = "-" if total < 0 else ""
    total = abs(total)
    secs, us = divmod(total, 1_000_000)
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    return f"{sign}{h:02d}:{m:02d}:{s:02d}.{us:06d}"


def fmt_datetime(dt):
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}"
        f"T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{dt.microsecond:06d}"
    )


class Decoder:
    def __init__(self, FT, NS):
        self.FT = FT  # pymysqlreplication.constants.FIELD_TYPE
        self.NS = NS  # pymysqlreplication.constants.NONE_SOURCE
        ft = FT
        self.ints = {ft.TINY, ft.SHORT, ft.INT24, ft.LONG, ft.LONGLONG}
        self.strings = {ft.VARCHAR, ft.VAR_STRING, ft.STRING, ft.BLOB, ft.TINY_BLOB, ft.MEDIUM_BLOB, ft.LONG_BLOB}

    @staticmethod
    def charset_of(column):
        collation = getattr(column, "collation_name", None)
        if not collation:
            return None
        return collation.split("_", 1)[0]

    def labels_trusted(self, column, labels):
        """Can these ENUM/SET labels (as the library decoded them) be trusted?"""
        charset = self.charset_of(column)
        if charset in UTF8_CHARSETS:
            return None
        if charset not in ASCII_COMPATIBLE:
            return f"labels in charset {charset or 'unknown'} (the library decodes labels as UTF-8)"
        for label in labels:
            if label == "" or not label.isascii():
                return f"non-ASCII or empty label in a {charset} column (the library decodes labels as UTF-8, failures as '')"
        return None

    def text(self, column, raw):
        if isinstance(raw, str):
            # Python decodes b"" to "" without looking up the codec.
            if raw != "":
                return undecodable("the library decoded a string itself")
            raw = b""
        charset = self.charset_of(column)
        if charset is None:
            return undecodable("unknown collation (no charset for the column)")
        if charset == "binary":
            if column.type == self.FT.STRING:
                length = getattr(column, "max_length", None)
                if length is None or len(raw) > length:
                    return undecodable(f"BINARY value of {len(raw)} bytes longer than the column ({length})")
                raw = raw.ljust(length, b"\0")
            return base64.b64encode(raw).decode("ascii")
        try:
            if charset in UTF8_CHARSETS:
                return raw.decode("utf-8")
            if charset == "latin1":
                return mysql_latin1(raw)
            if charset == "ascii":
                return raw.decode("ascii")
        except UnicodeDecodeError as e:
            return undecodable(f"bytes not valid {charset}: {e.reason} at {e.start}")
        return undecodable(f"charset {charset} not handled")

    def value(self, column, value, none_source):
        """(present, json value); present False for a column the row image left out."""
        FT, NS = self.FT, self.NS
        t = column.type
        if t == FT.ENUM and not column.enum_values:
            return True, undecodable("ENUM without labels in the TABLE_MAP")
        if t == FT.SET and not column.set_values:
            return True, undecodable("SET without labels in the TABLE_MAP")
        if value is None:
            if none_source == NS.COLS_BITMAP:
                return False, None
            if none_source == NS.NULL:
                return True, None
            if none_source == NS.EMPTY_SET and t == FT.SET:
                return True, []
            if none_source in (NS.OUT_OF_DATE_RANGE, NS.OUT_OF_DATETIME_RANGE, NS.OUT_OF_DATETIME2_RANGE):
                return True, undecodable(f"zero or invalid date/datetime: the library returns None ({none_source})")
            return True, undecodable(f"the library returned None ({none_source})")
        if t in self.ints:
            if type(value) is not int:
                return True, undecodable(f"integer read as {type(value).__name__}")
            return True, value
        if t == FT.YEAR:
            if type(value) is not int:
                return True, undecodable(f"YEAR read as {type(value).__name__}")
            return True, 0 if value == 1900 else value
        if t == FT.NEWDECIMAL:
            if not isinstance(value, decimal.Decimal) or not value.is_finite():
                return True, undecodable(f"DECIMAL read as {value!r}")
            text = format(value, "f")
            scale = len(text.partition(".")[2])
            if scale != column.decimals:
                return True, undecodable(f"DECIMAL({column.precision},{column.decimals}) read with scale {scale}: {text}")
            return True, text
        if t in (FT.FLOAT, FT.DOUBLE):
            if not isinstance(value, float) or value != value or value in (float("inf"), float("-inf")):
                return True, undecodable(f"non-finite float {value!r}")
            return True, value
        if t == FT.BIT:
            if not isinstance(value, str) or len(value) != column.bits or set(value) - {"0", "1"}:
                return True, undecodable(f"BIT({column.bits}) read as {value!r}")
            if column.bits == 1:
                return True, value == "1"
            return True, base64.b64encode(int(value, 2).to_bytes(column.bytes, "big")).decode("ascii")
        if t in self.strings:
            return True, self.text(column, value)
        if t == FT.GEOMETRY:
            if not isinstance(value, bytes):
                return True, undecodable(f"geometry read as {type(value).__name__}")
            return True, base64.b64encode(value).decode("ascii")
        if t == FT.ENUM:
            if not isinstance(value, str):
                return True, undecodable(f"ENUM read as {value!r}")
            labels = column.enum_values[1:]
            if value == "" and "" not in labels:
                return True, ""  # index 0: the empty error value, not a label
            why = self.labels_trusted(column, [value])
            return True, undecodable(why) if why else value
        if t == FT.SET:
            if not isinstance(value, set):
                return True, undecodable(f"SET read as {value!r}")
            labels = column.set_values
            if len(set(labels)) != len(labels):
                return True, undecodable("SET labels not distinct as decoded by the library")
            why = self.labels_trusted(column, list(value))
            if why:
                return True, undecodable(why)
            return True, [label for label in labels if label in value]
        if t == FT.DATE:
            if not isinstance(value, datetime.date):
                return True, undecodable(f"DATE read as {value!r}")
            return True, f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        if t in (FT.TIME, FT.TIME2):
            if not isinstance(value, datetime.timedelta):
                return True, undecodable(f"TIME read as {value!r}")
            if t == FT.TIME and value >= datetime.timedelta(hours=839):
                return True, undecodable("negative old-format TIME read as unsigned")
            if t == FT.TIME2 and value < datetime.timedelta(0) and getattr(column, "fsp", 0) and value.microseconds:
                return True, undecodable(
                    f"negative TIME({column.fsp}) with a fraction: the library mis-decodes it (read {fmt_time(value)})"
                )
            return True, fmt_time(value)
        if t in (FT.DATETIME, FT.DATETIME2):
            if not isinstance(value, datetime.datetime):
                return True, undecodable(f"DATETIME read as {value!r}")
            return True, fmt_datetime(value)
        if t in (FT.TIMESTAMP, FT.TIMESTAMP2):
            if not isinstance(value, datetime.datetime):
                return True, undecodable(f"TIMESTAMP read as {value!r}")
            if value == datetime.datetime(1970, 1, 1):
                return True, "0000-00-00T00:00:00.000000Z"
            return True, fmt_datetime(value) + "Z"
        if t == FT.JSON:
            return True, undecodable("MySQL binary JSON: the library returns Python objects, not the JSON text")
        return True, undecodable(f"column type {t} not handled")

    def image(self, columns, values, none_sources, unchanged=None):
        out = {}
        for column in columns:
            name = column.name
            if name not in values:
                raise Failure(f"column {name} missing from the decoded row")
            present, v = self.value(column, values[name], none_sources.get(name))
            if present:
                out[name] = v
            elif unchanged is not None:
                unchanged.append(name)
        return out


def plugin_text(image, types):
    """INET6 and UUID values (base64 of their 16 bytes above) in the text the
    server prints: glibc's inet_ntop for INET6, Python's uuid for UUID."""
    if not image:
        return
    for name, kind in types.items():
        value = image.get(name)
        if not isinstance(value, str):
            continue
        raw = base64.b64decode(value).ljust(16, b"\0")
        if len(raw) != 16:
            image[name] = undecodable(f"{kind} of {len(raw)} bytes")
        elif kind == "inet6":
            image[name] = socket.inet_ntop(socket.AF_INET6, raw)
        else:
            image[name] = str(uuid.UUID(bytes=raw))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", default="")
    parser.add_argument("--server-id", type=int, required=True, help="replica id to register with")
    parser.add_argument("--log-file", required=True)
    parser.add_argument("--log-pos", type=int, required=True)
    parser.add_argument("--only-schema", required=True)
    args = parser.parse_args()
    try:
        import codecs

        import pymysql
        from pymysqlreplication import BinLogStreamReader
        from pymysqlreplication.constants import FIELD_TYPE, NONE_SOURCE
        from pymysqlreplication.event import NotImplementedEvent
        from pymysqlreplication.row_event import DeleteRowsEvent, RowsEvent, UpdateRowsEvent, WriteRowsEvent
    except ImportError as e:
        print(f"mysql_binlog: {e} (run scripts/setup-python-tools.sh and use .tools/venv/bin/python)", file=sys.stderr)
        return 1
    codecs.register_error("tm_latin1_holes", _latin1_holes)
    # The library decodes strings with bytes.decode(charset_to_encoding(name)) and
    # returns the bytes when the codec does not exist: name none, get bytes.
    RowsEvent.charset_to_encoding = staticmethod(lambda name: "tidemark-differential-undecoded")
    sys.stdout.reconfigure(encoding="utf-8")

    settings = {"host": args.host, "port": args.port, "user": args.user, "password": args.password}
    decoder = Decoder(FIELD_TYPE, NONE_SOURCE)
    stream = None
    where = f"{args.log_file}:{args.log_pos}"
    table = "?"
    try:
        conn = pymysql.connect(**settings)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@binlog_row_metadata")
                (metadata,) = cur.fetchone()
        finally:
            conn.close()
        if str(metadata).upper() != "FULL":
            raise Failure(f"binlog_row_metadata is {metadata}, not FULL: the TABLE_MAP events lack names, signedness and labels")
        stream = BinLogStreamReader(
            connection_settings=dict(settings),
            server_id=args.server_id,
            resume_stream=True,
            blocking=False,
            log_file=args.log_file,
            log_pos=args.log_pos,
            only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, NotImplementedEvent],
            filter_non_implemented_events=False,
            only_schemas=[args.only_schema],
            verify_checksum=True,
            enable_logging=False,
        )
        out = sys.stdout
        plugin_cache = {}

        def plugin_types(schema, name):
            """Columns of MariaDB's plugin types (INET6, UUID), which the binlog
            sends as BINARY(16): name -> type, from information_schema."""
            if (schema, name) not in plugin_cache:
                conn = pymysql.connect(**settings)
                try:
                    with conn.cursor() as cur:
                        cur.execute(
                            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
                            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND DATA_TYPE IN ('inet6', 'uuid')",
                            (schema, name),
                        )
                        plugin_cache[(schema, name)] = {c: t for c, t in cur.fetchall()}
                finally:
                    conn.close()
            return plugin_cache[(schema, name)]

        for event in stream:
            where = f"{stream.log_file}:{event.packet.log_pos - event.packet.event_size}"
            if event._is_event_valid is False:
                raise Failure(f"event at {where}: CRC32 mismatch")
            if isinstance(event, NotImplementedEvent):
                if event.event_type in UNREADABLE_ROW_EVENTS:
                    raise Failure(f"{UNREADABLE_ROW_EVENTS[event.event_type]} at {where}: pymysqlreplication cannot read its rows")
                continue
            table = f"{event.schema}.{event.table}"
            table_map = event.table_map.get(event.table_id)
            if table_map is None or not table_map.column_name_flag:
                raise Failure(f"table {table} at {where}: TABLE_MAP without column names (binlog_row_metadata was not FULL)")
            columns = event.columns
            try:
                rows = event.rows
            except Failure:
                raise
            except Exception as e:
                raise Failure(f"table {table} at {where}: pymysqlreplication cannot read the rows: {type(e).__name__}: {e}")
            for row in rows:
                unchanged = []
                if isinstance(event, WriteRowsEvent):
                    op, before = "c", None
                    after = decoder.image(columns, row["values"], row["none_sources"], unchanged)
                elif isinstance(event, UpdateRowsEvent):
                    op = "u"
                    before = decoder.image(columns, row["before_values"], row["before_none_sources"])
                    after = decoder.image(columns, row["after_values"], row["after_none_sources"], unchanged)
                else:
                    op, after = "d", None
                    before = decoder.image(columns, row["values"], row["none_sources"])
                for image in (before, after):
                    plugin_text(image, plugin_types(event.schema, event.table))
                obj = {"table": table, "op": op, "before": before, "after": after, "unchanged": unchanged}
                out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
                out.write("\n")
        sys.stdout.flush()
    except Failure as e:
        print(f"mysql_binlog: {e}", file=sys.stderr)
        return 1
    except pymysql.err.MySQLError as e:
        print(f"mysql_binlog: at {where}: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except Exception as e:
        print(f"mysql_binlog: table {table} at {where}: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    finally:
        if stream is not None:
            stream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
