"""The judge: what the sink holds against what the source committed.

Per ``(table, key)`` both sides become a sequence of entries: ``snap`` (the row
as the initial snapshot saw it), ``img`` (the row after an insert or update) and
``del`` (gone: a delete, the old key of a key change, or a truncate of its
table), each image compared on ``id``, ``v`` and ``t`` only. The source side is
replayed from the audit table (entries up to the snapshot mark fold into one
``snap``; with a stream-only start they are not expected at all, and the
comparison starts at the first change after the daemon's first start; after a
cursor reset the new snapshot adds one ``snap`` per key live at the reset); the
sink side from the events, in file order (file sink) or in position order
(Kinesis, after dropping exact re-deliveries). The sequences must be equal: a
missing entry is a lost change, an extra one a change that was never committed
(or written twice).

Around that: duplicates (none at all for the file sink), distinct events that
share a ``position``, positions that do not increase (file order; per key and
shard on Kinesis), a cursor that moves backward, and (MariaDB) a cursor that is
not at a transaction boundary of the binlog. After a cursor reset against a
server whose binlog started over (``RESET MASTER``), positions belong to a new
log: these checks run on the lines (and cursor values) before the reset and
after it separately.
"""

import difflib
import json
from collections import Counter, defaultdict

from engines import TABLES

SNAP, IMG, DEL = "snap", "img", "del"


def image(row, previous=None, unchanged=()):
    """``(id, v, t)`` of a row image; ``t`` left out as unchanged comes from ``previous``."""
    if "t" in row:
        text = row["t"]
    elif "t" in unchanged:
        text = previous[2] if previous else "<unchanged, no earlier image>"
    else:
        text = "<absent>"
    return (int(row["id"]), int(row["v"]), text)


# -- the source's side --------------------------------------------------------------
class Replay:
    """Applies changes to per-key state, recording entries once ``recording``."""

    def __init__(self):
        self.state = {}
        self.live = defaultdict(set)
        self.history = defaultdict(list)
        self.recording = True

    def record(self, key, kind, img, where, op):
        if self.recording:
            self.history[key].append((kind, img, where, op))

    def put(self, table, key_id, img, where, op, kind=IMG):
        self.state[(table, key_id)] = img
        self.live[table].add(key_id)
        self.record((table, key_id), kind, img, where, op)

    def delete(self, table, key_id, where, op):
        self.state.pop((table, key_id), None)
        self.live[table].discard(key_id)
        self.record((table, key_id), DEL, None, where, op)

    def truncate(self, table, where):
        for key_id in sorted(self.live[table]):
            self.delete(table, key_id, where, "t")


def expected_histories(audit, mark, snapshot=True, resnapshot=None):
    """The committed history per key, from the daemon's start on.

    What committed up to ``mark`` (the daemon's first start) is replayed without
    being recorded; with ``snapshot`` it folds into one ``snap`` per live key (the
    initial snapshot), without it (a stream-only start) nothing of it is expected.
    ``resnapshot`` (an audit id: a cursor reset, after which the daemon took a new
    snapshot) adds a ``snap`` of every key live then. Returns ``(histories, final
    state, state at mark)``; the last one is what a stream-only sink's consumer
    knows of the rows it was never sent (for unchanged TOAST values and truncates).
    """
    folds = [(mark, snapshot)] + ([(resnapshot, True)] if resnapshot is not None else [])
    replay = Replay()
    replay.recording = False
    start = {}

    def fold(at, snap):
        if not replay.recording:
            start.update(replay.state)
        replay.recording = True
        if snap:
            for (table, key_id), img in sorted(replay.state.items()):
                replay.record((table, key_id), SNAP, img, at, "r")

    for row in audit:
        while folds and row.aid > folds[0][0]:
            fold(*folds.pop(0))
        if row.op == "c":
            replay.put(row.tbl, row.new_id, image(row.img), row.aid, "c")
        elif row.op == "u":
            if row.old_id != row.new_id:
                replay.delete(row.tbl, row.old_id, row.aid, "u")
            replay.put(row.tbl, row.new_id, image(row.img), row.aid, "u")
        elif row.op == "d":
            replay.delete(row.tbl, row.old_id, row.aid, "d")
        elif row.op == "t":
            replay.truncate(row.tbl, row.aid)
    while folds:
        fold(*folds.pop(0))
    return replay.history, replay.state, start


# -- the sink's side ----------------------------------------------------------------
def actual_histories(events, known=None):
    """The history per key as the events tell it; ``(histories, problems)``.

    ``known``: rows the sink was never sent but a consumer has (a stream-only
    start): ``{(table, id): (id, v, t)}``, not recorded, only looked up.
    """
    replay = Replay()
    for (table, key_id), img in (known or {}).items():
        replay.state[(table, key_id)] = img
        replay.live[table].add(key_id)
    problems = []
    for event in events:
        table = (event.get("source") or {}).get("table")
        if table not in TABLES:
            continue
        try:
            _apply_event(replay, table, event)
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"unreadable event ({error!r}): {json.dumps(event)[:300]}")
    return replay.history, problems


def _apply_event(replay, table, event):
    op, where = event["op"], event.get("position")
    after, before = event.get("after"), event.get("before") or {}
    if op in ("r", "c"):
        replay.put(table, int(after["id"]), image(after), where, op, SNAP if op == "r" else IMG)
    elif op == "u":
        new = int(after["id"])
        old = int(before["id"]) if "id" in before else new
        img = image(after, replay.state.get((table, old)), event.get("unchanged") or ())
        if old != new:
            replay.delete(table, old, where, "u")
        replay.put(table, new, img, where, "u")
    elif op == "d":
        old = before.get("id", (event.get("key") or {}).get("id"))
        replay.delete(table, int(old), where, "d")
    elif op == "t":
        replay.truncate(table, where)
    elif op != "s":
        raise ValueError(f"unknown op {op!r}")


# -- event-level checks ---------------------------------------------------------------
def identity(event):
    """What makes two events the same change (not ``ts_ms``, which is the emit time)."""
    source = event.get("source") or {}
    return json.dumps([event.get("position"), event.get("op"), source.get("table"),
                       event.get("key"), event.get("before"), event.get("after"),
                       event.get("unchanged")], sort_keys=True)


def captured(events):
    return [e for e in events if (e.get("source") or {}).get("table") in TABLES]


def duplicate_problems(events, exactly_once):
    """Duplicates, and distinct events sharing a position; returns ``(kept, problems)``."""
    problems, kept, seen = [], [], set()
    by_position = defaultdict(set)
    repeats = Counter()
    for event in events:
        ident = identity(event)
        by_position[event.get("position")].add(ident)
        if ident in seen:
            repeats[event.get("position")] += 1
            if exactly_once:
                kept.append(event)  # kept: the history comparison shows it as extra too
            continue
        seen.add(ident)
        kept.append(event)
    if exactly_once and repeats:
        first = next(iter(repeats))
        problems.append(f"duplicates: {sum(repeats.values())} events written twice by an"
                        f" exactly-once sink (first at position {first})")
    shared = {p: s for p, s in by_position.items() if len(s) > 1}
    if shared:
        first = min(shared)
        problems.append(f"shared positions: {len(shared)} positions carry more than one distinct"
                        f" event ({sum(len(s) for s in shared.values())} events; first {first},"
                        f" {len(shared[first])} events)")
    return kept, problems


def order_problems_file(events):
    """Positions must strictly increase in file order."""
    pairs = [(a.get("position"), b.get("position")) for a, b in zip(events, events[1:])]
    equal = [p for p in pairs if p[0] == p[1]]
    back = [p for p in pairs if p[1] < p[0]]
    problems = []
    if back:
        problems.append(f"file order: position goes back at {len(back)} places"
                        f" (first {back[0][0]} then {back[0][1]})")
    if equal:
        problems.append(f"file order: position repeats at {len(equal)} places (first {equal[0][0]})")
    return problems


def order_problems_kinesis(shard_events):
    """Per shard and key, positions must increase once exact re-deliveries are dropped."""
    last, seen, bad = {}, set(), []
    for shard, event in shard_events:
        ident = identity(event)
        if ident in seen:
            continue
        seen.add(ident)
        key = (shard, (event.get("source") or {}).get("table"), json.dumps(event.get("key")))
        position = event.get("position")
        if key in last and not last[key] < position:
            bad.append((key, last[key], position))
        last[key] = position
    if not bad:
        return []
    key, a, b = bad[0]
    return [f"kinesis order: a key's positions go back at {len(bad)} places"
            f" (first {key[1]} {key[2]} on {key[0]}: {a} then {b})"]


def shared_lsn_groups(events):
    """Postgres: events that share a change LSN (the rows of one COPY WAL record)."""
    groups = Counter()
    for event in events:
        source = event.get("source") or {}
        if event.get("op") in ("c", "u", "d") and "lsn" in source:
            groups[(source.get("commit_lsn"), source["lsn"])] += 1
    shared = [n for n in groups.values() if n > 1]
    return len(shared), sum(shared)


def cursor_problems(samples, boundaries_of=None, event_before=None):
    """A cursor never moves backward; MariaDB ones sit at transaction boundaries."""
    problems = []
    texts = [t for _, t, _ in samples if t]
    back = [(a, b) for a, b in zip(texts, texts[1:]) if b < a]
    if back:
        problems.append(f"cursor moved backward {len(back)} times (first {back[0][0]} -> {back[0][1]})")
    if boundaries_of is None:
        return problems
    inside, cache = [], {}
    for position, text, after_kill in samples:
        mysql = position.get("mysql") if isinstance(position, dict) else None
        if not mysql or not mysql.get("file"):
            continue
        file = mysql["file"]
        if file not in cache:
            cache[file] = boundaries_of(file)
        if cache[file] is not None and int(mysql["pos"]) not in cache[file]:
            inside.append((text, file, int(mysql["pos"]), after_kill))
    if inside:
        text, file, pos, after_kill = inside[0]
        problems.append(
            f"cursor inside a transaction: {len(inside)} committed cursor values name no"
            f" transaction boundary of the binlog ({sum(1 for i in inside if i[3])} of them"
            f" read after a SIGKILL; first {text} = {file}:{pos}, right after the event"
            f" {event_before(file, pos) if event_before else '?'})")
    return problems


# -- comparing histories ------------------------------------------------------------
def compare(expected, actual):
    """Divergent keys, earliest first:
    ``[(order, key, index, exp, act, missing, extra, missing entries)]``."""
    divergent = []
    for key in set(expected) | set(actual):
        exp, act = expected.get(key, []), actual.get(key, [])
        exp_cmp = [(e[0], e[1]) for e in exp]
        act_cmp = [(e[0], e[1]) for e in act]
        if exp_cmp == act_cmp:
            continue
        index = next((n for n, (a, b) in enumerate(zip(exp_cmp, act_cmp)) if a != b),
                     min(len(exp_cmp), len(act_cmp)))
        missing = extra = 0
        lost = []
        matcher = difflib.SequenceMatcher(None, exp_cmp, act_cmp, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag in ("delete", "replace"):
                missing += i2 - i1
                lost += exp[i1:i2]
            if tag in ("insert", "replace"):
                extra += j2 - j1
        if index < len(exp):
            order = (0, exp[index][2], "")
        elif exp:
            order = (0, exp[-1][2] + 0.5, "")
        else:
            order = (1, 0, str(act[0][2]))
        divergent.append((order, key, index, exp, act, missing, extra, lost))
    divergent.sort(key=lambda d: d[0])
    return divergent


def summary_of(divergent, phase_of=None):
    """``missing``/``extra`` lines; ``phase_of(entry)`` names when a missing entry
    committed (say, while the daemon was down), for a breakdown."""
    missing = sum(d[5] for d in divergent)
    extra = sum(d[6] for d in divergent)
    lines = []
    if missing:
        keys = sum(1 for d in divergent if d[5])
        line = f"missing: {missing} committed changes absent from the sink ({keys} keys)"
        if phase_of:
            phases = Counter(phase_of(entry) for d in divergent for entry in d[7])
            line += ": " + ", ".join(f"{n} {label}" for label, n in phases.most_common())
        lines.append(line)
    if extra:
        keys = sum(1 for d in divergent if d[6])
        lines.append(f"extra: {extra} sink entries the source never committed ({keys} keys)")
    return lines


def show_entry(entry):
    """``kind(op) v=.. t=.. @where``: ``del(t)`` is a truncate, ``del(u)`` a key change."""
    kind, img, where, op = entry
    if kind == DEL:
        return f"del({op}) @{where}"
    text = img[2]
    shown = repr(text[:14]) + (f"..({len(text)})" if len(text) > 14 else "")
    return f"{kind}({op}) v={img[1]} t={shown} @{where}"


def show_sequence(entries, index, width=6):
    lo = max(0, index - 2)
    hi = min(len(entries), lo + width)
    body = [show_entry(e) for e in entries[lo:hi]]
    head = [f"...{lo} earlier"] if lo else []
    tail = [f"...{len(entries) - hi} more"] if hi < len(entries) else []
    return "[" + "; ".join(head + body + tail) + "]"


def describe_divergence(d, explain=None):
    """The first divergent key, both its histories, and where the sink's entry came from."""
    _, (table, key_id), index, exp, act, missing, extra = d[:7]
    text = (f"first divergent key: {table} id={key_id} (entry {index}; source has {len(exp)},"
            f" sink has {len(act)}; {missing} missing, {extra} extra)\n"
            f"    source (audit aid): {show_sequence(exp, index)}\n"
            f"    sink (position):    {show_sequence(act, index)}")
    if explain and index < len(act) and isinstance(act[index][2], str):
        origin = explain(act[index][2])
        if origin:
            text += f"\n    sink entry {index} comes from {origin}"
    return text


def check_oracle(final_state, tables):
    """The audit replay must end where the tables are; else the harness itself is wrong."""
    bad = []
    for table in TABLES:
        have = {k[1]: v for k, v in final_state.items() if k[0] == table}
        rows = tables[table]
        if have != rows:
            diff = sorted(set(have.items()) ^ set(rows.items()))[:2]
            bad.append(f"{table}: audit replay {len(have)} rows, table {len(rows)} rows, e.g. {diff}")
    return bad
