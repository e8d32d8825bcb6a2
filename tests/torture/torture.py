#!/usr/bin/env python3
"""tidemark torture: a seeded, randomized crash harness.

Each run takes one seed, one engine (PostgreSQL or MariaDB, on servers of the
harness's own) and one sink (file sink + file cursor, or Kinesis + DynamoDB on
the local emulators). It fills three tables, starts the daemon (which takes the
initial snapshot), then runs a seeded workload while SIGKILLing the daemon 3-8
times and restarting the database server at least once, restarting the daemon
as systemd would. At the end it writes a fence row, waits (bounded) until the
sink holds it, stops the daemon with SIGTERM and judges the sink against the
audit table that triggers filled in the source's own transactions (see
oracle.py). Runs repeat with seed, seed+1, ... until the time budget (or the
run count) is spent, cycling through the engine/sink combinations.

Two variations ride on top of those faults, chosen from the seed:

* stream-only start (every seed divisible by 3, any engine and sink):
  ``snapshot = "never"``. The daemon is started, left until it streams, then
  SIGTERMed or SIGKILLed before any write to the captured tables; some steps
  commit while it is down, then it starts again and the workload goes on. Only
  what committed after its first start is expected, all of it, and no
  snapshot row.
* cursor reset (every MariaDB run with the file sink): once, at a seeded moment
  mid-workload, the daemon catches up (a fence row), is SIGTERMed, the server
  runs ``RESET MASTER`` (its binlog starts over: positions go down),
  ``tidemark cursor reset`` forgets the cursor, and the daemon starts again: it
  must take a new snapshot (equal to the tables at the reset) and stream on,
  writing into a new sink file, skipping nothing. In a stream-only run the config
  says ``snapshot = "initial"`` from the reset on.

    python3 tests/torture/torture.py --minutes 2 --seed 1 --bin target/debug/tidemark

The last line is ``torture: N passed, M failed``; a failed run prints
``SEED=<seed> engine=<e> sink=<s>``, what went wrong, the first divergent key
with both its histories, and the command that replays it.
"""

import argparse
import fcntl
import random
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import oracle
from daemon import Daemon
from engines import TABLES, make_engine
from faults import CursorWatch, Killer
from servers import BASE
from sinks import env as aws_env
from sinks import make_sink, purge_aws_leftovers
from workload import Workload

FENCE_V = -424242
# Committed row changes per second the workload may run ahead at, by sink: the
# daemon's debug build into the Kinesis emulator takes a few thousand events/s.
ROWS_PER_SECOND = {"file": 4000, "kinesis": 1500}
KEEP_FAILED = 5  # failed runs whose state stays for inspection (the latest ones)


class Skipped(Exception):
    """The daemon went past a fence row without writing it."""


@dataclass
class Totals:
    passed: int = 0
    failed: int = 0
    kills: int = 0
    restarts: int = 0
    events: int = 0
    stream_only: int = 0
    resets: int = 0
    failures: list = field(default_factory=list)


@dataclass
class Plan:
    """Everything a run decides from its seed before it starts."""

    seed: int
    engine: str
    sink: str
    seconds: float
    max_batch: int = 0
    commit_interval: str = ""
    full_identity: tuple = ()
    kill_moments: list = field(default_factory=list)
    restart_moments: list = field(default_factory=list)
    stream_only: bool = False  # snapshot = "never", stopped once before any write
    stream_stop: str = ""  # SIGTERM or SIGKILL
    stream_pause: float = 0.0  # seconds between "running" and the stop
    down_steps: list = field(default_factory=list)  # step kinds run while it is down
    reset_at: float = None  # seconds into the workload of the cursor reset (or None)

    @property
    def name(self):
        return f"tt_{self.seed}_{self.engine}_{self.sink}"

    def decide(self):
        rng = random.Random(f"{self.seed}:plan")
        self.max_batch = rng.choice([50, 64, 100, 128, 200, 256, 333, 500])
        self.commit_interval = rng.choice(["0s", "200ms", "1s"])
        self.full_identity = tuple(t for t in TABLES if rng.random() < 0.35)
        span = self.seconds
        self.kill_moments = sorted(rng.uniform(0.05, 0.95) * span for _ in range(rng.randint(3, 8)))
        self.restart_moments = sorted(
            (rng.uniform(0.15, 0.85) * span, rng.random() < 0.5) for _ in range(rng.randint(1, 2)))
        self.decide_variations(span)
        return self

    def decide_variations(self, span):
        """Stream-only start: every third seed (so any three consecutive runs hold
        one, and in the four-combination cycle every combination gets it in
        turn). Cursor reset: every MariaDB file-sink run (the only combination it
        applies to; one in four runs when all four cycle)."""
        rng = random.Random(f"{self.seed}:variations")
        self.stream_only = self.seed % 3 == 0
        if self.stream_only:
            self.stream_stop = rng.choice(["SIGTERM", "SIGKILL"])
            self.stream_pause = rng.uniform(0.0, 1.0)
            kinds = ["insert", "update", "delete", "pk_update", "bulk", "big_tx"]
            if self.engine == "mariadb":
                kinds.append("xa_commit")
            self.down_steps = [rng.choice(kinds) for _ in range(rng.randint(2, 5))]
        if self.engine == "mariadb" and self.sink == "file":
            self.reset_at = rng.uniform(0.3, 0.7) * span

    def describe(self):
        extra = ""
        if self.stream_only:
            extra += f" start=never({self.stream_stop},{len(self.down_steps)} steps down)"
        if self.reset_at is not None:
            extra += f" cursor_reset@{self.reset_at:.1f}s"
        return (f"SEED={self.seed} engine={self.engine} sink={self.sink}"
                f" (batch={self.max_batch} commit_interval={self.commit_interval}"
                f" kills={len(self.kill_moments)} server_restarts={len(self.restart_moments)}"
                f" full_identity={','.join(self.full_identity) or '-'}{extra})")


class Run:
    """One seed on one engine and one sink, from an empty database to a verdict."""

    def __init__(self, plan, args):
        self.plan, self.args = plan, args
        self.engine = make_engine(plan.engine)
        self.dir = BASE / "runs" / plan.name
        self.sink = make_sink(plan.sink, self.dir, random.Random(f"{plan.seed}:sink"), plan.name)
        self.sink.pipeline = plan.name
        self.db = plan.name
        self.daemon = None
        self.problems = []
        self.notes = []
        self.restarts = 0
        self.events_checked = 0
        self.phases = []
        self.reset = None  # what the cursor reset left for the judge (see cursor_reset)
        self.paused = 0.0  # workload seconds spent on the cursor reset

    # -- set up -----------------------------------------------------------------------
    def config(self, snapshot=None):
        snapshot = snapshot or ("never" if self.plan.stream_only else "initial")
        source = self.engine.source_toml(self.db, self.plan.seed, snapshot)
        text = (f'[pipeline]\nname = "{self.plan.name}"\nmax_batch_events = {self.plan.max_batch}\n'
                f'commit_interval = "{self.plan.commit_interval}"\n\n'
                f"[source]\n{source}\n"
                f"{self.sink.toml()}\n[log]\nlevel = \"info\"\n")
        path = self.dir / "tidemark.toml"
        path.write_text(text)
        return path

    def daemon_env(self):
        return dict(aws_env(), TIDEMARK_HTTP_LISTEN="127.0.0.1:0", RUST_BACKTRACE="1")

    def set_up(self):
        self.engine.server.ensure()
        self.engine.create_db(self.db, self.plan.full_identity)
        self.sink.setup()
        config = self.config()
        if self.plan.sink == "kinesis":
            out = subprocess.run([self.args.bin, "cursor", "init", "--config", str(config)],
                                 capture_output=True, text=True, env=self.daemon_env(), timeout=60)
            if out.returncode != 0:
                raise RuntimeError(f"tidemark cursor init failed: {out.stderr.strip()[-500:]}")
        self.workload = Workload(self.engine, self.db, random.Random(f"{self.plan.seed}:workload"),
                                 self.plan.max_batch, f"tt{self.plan.seed}")
        self.workload.prepopulate()
        self.mark = self.engine.max_aid(self.db)
        self.daemon = Daemon(self.args.bin, config, self.dir / "daemon.log", self.daemon_env())
        self.daemon.start()
        if self.plan.stream_only:
            self.stream_only_start()
            return
        self.wait("the initial snapshot (a committed cursor)",
                  lambda: self.sink.cursor() is not None, self.args.catchup_timeout)

    def committed(self):
        cursor = self.sink.cursor()
        return bool(cursor) and "position" in cursor

    def wait_streaming(self, what):
        """Until the daemon's latest start logged ``pipeline <name> running`` (and,
        on Postgres, the slot is active with a confirmed position)."""
        line = f"pipeline {self.plan.name} running"
        self.wait(what, lambda: line in self.daemon.current_log() and self.engine.streaming(self.db),
                  self.args.catchup_timeout)

    def stream_only_start(self):
        """``snapshot = "never"``: stopped once while streaming, before any write to
        the captured tables; steps commit while it is down; started again."""
        plan = self.plan
        self.wait_streaming("the stream-only start to stream")
        up = time.monotonic()
        # The daemon commits its start position before it says it runs, so a
        # kill at once after "running" must lose nothing made meanwhile.
        time.sleep(plan.stream_pause)
        sig = getattr(signal, plan.stream_stop)
        waited = time.monotonic() - up
        running, code = self.daemon.stop_only(sig)
        try:
            if not running:
                self.notes.append(f"stream-only start: the daemon was down at the stop (exit {code})")
            elif sig == signal.SIGTERM and code != 0:
                self.problems.append(
                    "stream-only start: SIGTERM " + ("did not end the daemon within 20 s"
                                                     if code is None else f"exited {code}, not 0"))
            had = "a cursor" if self.committed() else "no cursor"
            before = self.workload.rows
            for kind in plan.down_steps:
                self.workload.step(kind)
            self.down_end = self.engine.max_aid(self.db)
            self.notes.append(
                f"stream-only start: {plan.stream_stop} {waited:.1f}s after 'running' ({had}),"
                f" then {len(plan.down_steps)} steps ({self.workload.rows - before} rows,"
                f" {' '.join(plan.down_steps)}) while down")
        finally:
            self.daemon.start_again()
        self.wait_streaming("the daemon to stream again after the stream-only stop")

    def wait(self, what, check, limit, interval=0.1):
        deadline = time.monotonic() + limit
        while not check():
            if time.monotonic() > deadline:
                exits = self.daemon.exits
                raise TimeoutError(
                    f"timed out after {limit:.0f}s waiting for {what}; the daemon exited on its"
                    f" own {len(exits)} times (last (code, seconds up): {exits[-3:]});"
                    f" its log ends:\n{self.daemon.log_tail()}")
            time.sleep(interval)

    # -- the workload under faults -------------------------------------------------------
    def torture(self):
        rng = random.Random(f"{self.plan.seed}:faults")
        interval = 0.01 if self.plan.sink == "file" else 0.1
        self.cursors = CursorWatch(self.sink, interval)
        self.cursors.start()
        killer = Killer(self.daemon, self.sink, rng, self.plan.kill_moments, self.cursors)
        killer.begin()
        restarts = list(self.plan.restart_moments)
        reset_at = self.plan.reset_at
        rate = self.args.max_rows_per_second or ROWS_PER_SECOND[self.plan.sink]
        base = self.workload.rows
        try:
            while self.keep_going(killer):
                elapsed = time.monotonic() - killer.t0
                if restarts and elapsed >= restarts[0][0]:
                    self.restart_server(restarts.pop(0)[1])
                if reset_at is not None and elapsed >= reset_at:
                    reset_at = None
                    self.cursor_reset(killer)
                ahead = (self.workload.rows - base) / rate - (elapsed - self.paused)
                if ahead > 0:  # keep the volume such that the sink can follow
                    time.sleep(min(ahead, 0.5))
                    continue
                self.workload.step()
            for _, hard in restarts:  # moments the workload overran: still due
                self.restart_server(hard)
            if reset_at is not None:
                self.cursor_reset(killer)
        finally:
            killer.finish()
        self.notes.append(f"kills while the sink grew: {killer.progress_triggered}")
        work = self.workload
        self.notes.append("steps " + " ".join(f"{k}={n}" for k, n in sorted(work.steps.items())))
        if work.errors:
            self.notes.append(f"{len(work.errors)} steps failed (first: {work.errors[0][:200]})")

    def keep_going(self, killer):
        """Until the workload time is up and every planned kill happened (30 s grace)."""
        elapsed = time.monotonic() - killer.t0
        if elapsed < self.plan.seconds:
            return True
        return killer.is_alive() and elapsed < self.plan.seconds + 30

    def restart_server(self, hard):
        how, problem = self.engine.server.restart(hard)
        self.restarts += 1
        self.notes.append(how)
        if problem and self.args.blocked_shutdown == "fail":
            self.problems.append(problem)
        elif problem:
            self.notes.append(f"warning: {problem}")

    def cursor_reset(self, killer):
        """Once, mid-workload (MariaDB, file sink): the daemon catches up and stops
        (SIGTERM), the server's binlog starts over (``RESET MASTER``), ``tidemark
        cursor reset``, and the daemon starts again: a new snapshot, then the stream.
        Nothing writes from the fence row until the new snapshot is committed, and
        no kill lands meanwhile, so the snapshot is the tables at the reset."""
        began = time.monotonic()
        with killer.hold:
            problem = self.fence(FENCE_V + 1, "before the cursor reset")
            if problem:
                self.problems.append(f"cursor reset: {problem}")
            running, code = self.daemon.stop_only(signal.SIGTERM)
            restart = None
            try:
                if not running:
                    self.notes.append(f"cursor reset: the daemon was down at the stop (exit {code})")
                elif code != 0:
                    self.problems.append(
                        "cursor reset: SIGTERM " + ("did not end the daemon within 20 s"
                                                    if code is None else f"exited {code}, not 0"))
                reset = self.reset = {"at": time.monotonic() - killer.t0}
                self.cursors.sample()
                with self.cursors.lock:
                    reset["cursor_samples"] = len(self.cursors.samples)
                    before = list(self.cursors.samples)
                # The binlog the cursor values name is about to go: judged now.
                self.problems += [f"before the cursor reset: {p}" for p in oracle.cursor_problems(
                    before, self.engine.binlog_boundaries, self.engine.event_before)]
                events, torn = self.sink.read_all()
                events = oracle.captured(events)
                reset["lines"] = len(events)
                reset["positions"] = {e.get("position") for e in events}
                reset["files"] = {p.name: p.stat().st_size for p in self.sink.files()}
                if torn:
                    self.problems.append(f"cursor reset: a torn last line ({torn} bytes) after SIGTERM")
                reset["mark"] = self.engine.max_aid(self.db)
                self.engine.reset_binlog()
                out = subprocess.run(
                    [self.args.bin, "cursor", "reset", "--config", str(self.dir / "tidemark.toml")],
                    capture_output=True, text=True, env=self.daemon_env(), timeout=60)
                if out.returncode != 0:
                    raise RuntimeError(f"tidemark cursor reset exited {out.returncode}:"
                                       f" {(out.stderr or out.stdout).strip()[-500:]}")
                if self.committed():
                    self.problems.append("cursor reset: the cursor is still there after"
                                         " `tidemark cursor reset`")
                if self.plan.stream_only:
                    self.config(snapshot="initial")  # a new snapshot, not the binlog's end
                restart = self.daemon.starts + 1
            finally:
                self.daemon.start_again()
            snapped = time.monotonic()
            try:
                self.wait("the new snapshot after the cursor reset (a committed cursor)",
                          self.committed, self.args.catchup_timeout)
            except TimeoutError as error:
                self.problems.append(f"cursor reset: {str(error).splitlines()[0]}")
            reset["snapshot_seconds"] = time.monotonic() - snapped
            said = "no event is skipped as already written"
            if said not in self.daemon.log_since(restart):
                self.problems.append(f"cursor reset: the daemon's log after the reset does not say"
                                     f" '{said}'")
        self.paused += time.monotonic() - began

    def fence(self, value, what):
        """Writes a fence row into t1 and waits until the sink holds it. Returns None,
        or why not: the committed cursor passed the fence row's commit while the
        sink never got the row (a skip: said after a few seconds, not after the
        whole timeout), or the timeout."""
        (fence,) = self.workload.model.fresh(1)
        self.engine.execute(self.db, f"INSERT INTO t1 (id, v, t) VALUES ({fence}, {value}, 'fence');")
        end = self.engine.log_end(self.db)
        needle = f":{fence}".encode()  # a cheap filter before parsing
        passed = []

        def fenced():
            for event in self.sink.tail(needle):
                after = event.get("after") or {}
                if (event.get("source") or {}).get("table") == "t1" and after.get("id") == fence:
                    return True
            cursor = self.sink.cursor() or {}
            point = self.engine.cursor_point(cursor.get("position_text"))
            if not passed and point is not None and point >= end:
                passed.append((time.monotonic(), cursor.get("position_text")))
            if passed and time.monotonic() - passed[0][0] > 3:
                raise Skipped(f"the committed cursor ({passed[0][1]}) passed the fence row's"
                              f" commit (log end {end} then) but the sink never got the row")
            return False

        try:
            self.wait(f"the daemon to catch up {what} (fence row t1 id={fence})", fenced,
                      self.args.catchup_timeout, interval=0.25)
        except (Skipped, TimeoutError) as error:
            return f"fence row t1 id={fence} {what}: {str(error).splitlines()[0]}"
        return None

    def catch_up(self):
        """Writes a fence row and waits until the sink holds it (then a quiet moment).
        A sink that does not get it is a problem, and the judge still runs."""
        problem = self.fence(FENCE_V, "at the end")
        if problem:
            self.problems.append(f"catch-up: {problem}")
            return
        if self.plan.sink == "kinesis":
            quiet = [time.monotonic()]

            def settled():
                if self.sink.tail():
                    quiet[0] = time.monotonic()
                return time.monotonic() - quiet[0] > 1.5

            self.wait("the stream to settle", settled, 60, interval=0.3)

    def stop(self):
        self.cursors.finish()
        was_running, code = self.daemon.stop()
        if not was_running:
            self.notes.append(f"the daemon was down at the end (last exit {code})")
        elif code is None:
            self.problems.append("SIGTERM: the daemon did not exit within 20 s")
        elif code != 0:
            self.problems.append(f"SIGTERM: the daemon exited {code}, not 0")

    # -- judging -------------------------------------------------------------------------
    def sink_events(self):
        """Captured events in judging order, after the sink-specific checks."""
        if self.plan.sink == "file":
            events, torn = self.sink.read_all()
            events = oracle.captured(events)
            if torn:
                self.problems.append(f"file sink: a torn last line ({torn} bytes) after a clean stop")
            parts = [("", events)]
            if self.reset:  # a new log after RESET MASTER: its positions start over
                lines = self.reset["lines"]
                parts = [("before the cursor reset: ", events[:lines]),
                         ("after the cursor reset: ", events[lines:])]
                self.reset_file_problems(events[lines:])
            kept = []
            for label, part in parts:
                part_kept, problems = oracle.duplicate_problems(part, exactly_once=True)
                kept += part_kept
                self.problems += [label + p for p in problems + oracle.order_problems_file(part)]
            self.events_checked = len(events)
            return kept
        shard_events = [(s, e) for s, e in self.sink.read_all_shards()
                        if (e.get("source") or {}).get("table") in TABLES]
        kept, problems = oracle.duplicate_problems([e for _, e in shard_events], exactly_once=False)
        self.problems += problems + oracle.order_problems_kinesis(shard_events)
        self.events_checked = len(shard_events)
        self.notes.append(f"re-deliveries {len(shard_events) - len(kept)}")
        return sorted(kept, key=lambda e: e.get("position") or "")

    def reset_file_problems(self, after):
        """After the reset: the new snapshot's rows come first, in a new file."""
        grown = [name for name, size in self.reset["files"].items()
                 if size and (self.sink.events_dir / name).stat().st_size != size]
        if grown:
            self.problems.append(f"after the cursor reset: lines went on in {grown[0]}, a file of"
                                 " the old cursor's lines, not in a new file")
        snap = sum(1 for e in after if e.get("op") == "r")
        self.notes.append(
            f"cursor reset at {self.reset['at']:.1f}s: {self.reset['lines']} lines before it,"
            f" then {snap} snapshot rows in {self.reset['snapshot_seconds']:.1f}s"
            f" and {len(after) - snap} more")

    def phase_of(self, entry):
        """When an expected entry committed, as the variations split a run."""
        kind, _, where, _ = entry
        after_reset = self.reset is not None and where > self.reset["mark"]
        if kind == oracle.SNAP:
            if self.reset is not None and where == self.reset["mark"]:
                return "rows of the new snapshot after the cursor reset"
            return "rows of the initial snapshot"
        if self.plan.stream_only and where <= getattr(self, "down_end", self.mark):
            return "committed while the daemon was down after its stream-only start"
        if self.reset is not None:
            return "committed after the cursor reset" if after_reset else "committed before the cursor reset"
        return "committed while the daemon ran"

    def judge(self):
        events = self.sink_events()
        if self.plan.engine == "pg":
            groups, rows = oracle.shared_lsn_groups(events)
            self.notes.append(f"{rows} events in {groups} shared-LSN groups")
        audit = self.engine.read_audit(self.db)
        resnapshot = self.reset["mark"] if self.reset else None
        expected, final, start = oracle.expected_histories(
            audit, self.mark, snapshot=not self.plan.stream_only, resnapshot=resnapshot)
        actual, problems = oracle.actual_histories(
            events, known=start if self.plan.stream_only else None)
        self.problems += problems
        tables = {t: self.engine.table_rows(self.db, t) for t in TABLES}
        for bad in oracle.check_oracle(final, tables):
            self.problems.append(f"HARNESS: audit replay disagrees with the tables: {bad[:400]}")
        self.divergent = oracle.compare(expected, actual)
        variation = self.plan.stream_only or self.reset
        self.problems += oracle.summary_of(self.divergent, self.phase_of if variation else None)
        samples = self.cursors.samples
        if self.reset:  # the values before it were judged before the binlog went
            samples = samples[self.reset["cursor_samples"]:]
        self.problems += [("after the cursor reset: " if self.reset else "") + p
                          for p in oracle.cursor_problems(
                              samples, getattr(self.engine, "binlog_boundaries", None),
                              getattr(self.engine, "event_before", None))]
        for line in self.daemon.panics()[:3]:
            self.problems.append(f"daemon panicked: {line.strip()[:300]}")
        self.notes.append(f"audit rows {len(audit)}, cursor samples {len(self.cursors.samples)}")

    # -- the whole run ---------------------------------------------------------------------
    def execute(self):
        started = time.monotonic()
        try:
            for phase in (self.set_up, self.torture, self.catch_up, self.stop, self.judge):
                begun = time.monotonic()
                phase()
                self.phases.append(f"{phase.__name__.replace('_', '')} {time.monotonic() - begun:.0f}s")
        except Exception as error:  # noqa: BLE001 - any error fails the run, with its story
            self.problems.append(f"run aborted: {error}")
            if self.args.verbose:
                traceback.print_exc()
            self.divergent = []
        finally:
            if getattr(self, "cursors", None):
                self.cursors.stop_event.set()
            if self.daemon:
                self.daemon.stop(limit=5)
        self.seconds = time.monotonic() - started
        self.clean_up()
        return not self.problems

    def clean_up(self):
        """Always frees the slot; removes everything else only after a pass (or --no-keep)."""
        try:
            if self.plan.engine == "pg":
                self.engine.server.psql("postgres", (
                    f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                    f" WHERE slot_name = '{self.db}' AND NOT active"), check=False)
        except Exception as error:  # noqa: BLE001
            self.notes.append(f"clean-up: {error}")
        if not self.problems or self.args.no_keep:
            self.discard()

    def discard(self):
        """Removes the run's database, sink (directory, or stream and table) and files."""
        try:
            self.engine.drop_db(self.db)
            self.sink.teardown()
            shutil.rmtree(self.dir, ignore_errors=True)
        except Exception as error:  # noqa: BLE001
            self.notes.append(f"clean-up: {error}")

    def report(self, index):
        d = self.daemon
        kills = d.kills if d else 0
        head = (f"run {index}: {self.plan.describe()}: {'PASS' if not self.problems else 'FAIL'}"
                f" in {self.seconds:.0f}s; events {self.events_checked}, kills {kills},"
                f" server restarts {self.restarts}, daemon starts {d.starts if d else 0},"
                f" own exits {len(d.exits) if d else 0}, steps {sum(self.workload.steps.values()) if hasattr(self, 'workload') else 0}")
        print(head)
        print("    " + "; ".join(self.phases + self.notes))
        if not self.problems:
            return
        print(f"SEED={self.plan.seed} engine={self.plan.engine} sink={self.plan.sink}")
        for problem in self.problems:
            print(f"    {problem}")
        if self.divergent:
            explain = getattr(self.engine, "explain", None)
            if explain and self.reset:  # the binlogs of the old positions are gone
                old = self.reset["positions"]
                explain = (lambda p, e=explain: None if p in old else e(p))
            print("    " + oracle.describe_divergence(self.divergent[0], explain))
        print(f"    kept: {self.dir} (daemon.log, tidemark.toml, events), database {self.db}")
        print(f"    replay: scripts/torture.sh --seed {self.plan.seed} --engine {self.plan.engine}"
              f" --sink {self.plan.sink} --runs 1 --run-seconds {self.plan.seconds:g}"
              f" --bin {self.args.bin}"
              )


# -- the command line ----------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="total wall-time budget (default 2)")
    budget.add_argument("--runs", type=int, help="run exactly this many runs instead")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    parser.add_argument("--engine", choices=["pg", "mariadb", "both"], default="both")
    parser.add_argument("--sink", choices=["file", "kinesis", "both"], default="both")
    parser.add_argument("--bin", default="target/debug/tidemark", help="the tidemark binary")
    parser.add_argument("--run-seconds", type=float, default=15.0,
                        help="workload seconds per run (default 15)")
    parser.add_argument("--max-rows-per-second", type=float, default=None,
                        help="workload volume cap (default 4000 for file, 1500 for kinesis)")
    parser.add_argument("--catchup-timeout", type=float, default=180.0,
                        help="longest wait for the snapshot and for the final catch-up")
    parser.add_argument("--blocked-shutdown", choices=["fail", "warn"], default="fail",
                        help="a PostgreSQL fast shutdown the daemon blocks: fail the run (default)")
    parser.add_argument("--no-keep", action="store_true", help="remove failed runs' state too")
    parser.add_argument("--verbose", action="store_true", help="tracebacks for aborted runs")
    args = parser.parse_args(argv)
    if args.minutes is None and args.runs is None:
        args.minutes = 2.0
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    args.bin = str(Path(args.bin).resolve())
    return args


def combos(args):
    """Engine/sink pairs in run order; with both of each, any three runs cover all four."""
    engines = ["pg", "mariadb"] if args.engine == "both" else [args.engine]
    sinks = ["file", "kinesis"] if args.sink == "both" else [args.sink]
    pairs = [(e, s) for s in sinks for e in engines]
    return [pairs[i] for i in (0, 3, 1, 2)] if len(pairs) == 4 else pairs


def overhead(sink):
    """Rough seconds a run needs besides its workload (setup, catch-up, judging)."""
    return 22.0 if sink == "kinesis" else 12.0


def next_plan(args, index, deadline):
    """The plan of run ``index``, or None when the budget is spent."""
    engine, sink = combos(args)[index % len(combos(args))]
    seconds = args.run_seconds
    if args.runs is not None:
        if index >= args.runs:
            return None
    else:
        left = deadline - time.monotonic() - overhead(sink)
        if left < min(seconds, 8.0):
            return None
        seconds = min(seconds, left)
    return Plan(args.seed + index, engine, sink, seconds).decide()


def purge_leftovers(args):
    """Removes what earlier invocations kept of their failed runs (``tt_*`` everywhere)."""
    shutil.rmtree(BASE / "runs", ignore_errors=True)
    engines = ["pg", "mariadb"] if args.engine == "both" else [args.engine]
    for name in engines:
        engine = make_engine(name)
        engine.server.ensure()
        for db in engine.leftovers():
            engine.drop_db(db)
    if args.sink != "file":
        purge_aws_leftovers()


def exclusive(path):
    """One invocation at a time: each one drops every ``tt_*`` leftover and a cursor
    reset runs ``RESET MASTER`` on the shared server, so a second one waits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"torture: another invocation holds {path}; waiting for it", flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def main(argv):
    args = parse_args(argv)
    print(f"torture: seed {args.seed} (replay with --seed {args.seed}); engine={args.engine}"
          f" sink={args.sink} bin={args.bin} "
          + (f"budget={args.minutes:g} min" if args.runs is None else f"runs={args.runs}"),
          flush=True)
    if not Path(args.bin).is_file():
        print(f"torture: no binary at {args.bin}")
        print("torture: 0 passed, 1 failed")
        return 1
    lock = exclusive(BASE / "harness.lock")  # held until the process ends
    started = time.monotonic()
    deadline = started + (args.minutes or 0) * 60
    totals = Totals()
    purge_leftovers(args)
    kept = []
    index = 0
    while True:
        plan = next_plan(args, index, deadline)
        if plan is None:
            break
        run = Run(plan, args)
        ok = run.execute()
        run.report(index + 1)
        sys.stdout.flush()
        totals.passed += ok
        totals.failed += not ok
        totals.kills += run.daemon.kills if run.daemon else 0
        totals.restarts += run.restarts
        totals.events += run.events_checked
        totals.stream_only += plan.stream_only
        totals.resets += run.reset is not None
        if not ok:
            totals.failures.append(f"SEED={plan.seed} engine={plan.engine} sink={plan.sink}")
            kept.append(run)
            if len(kept) > KEEP_FAILED:
                kept.pop(0).discard()
        index += 1
    print(f"torture: runs {index}, daemon kills {totals.kills}, server restarts {totals.restarts},"
          f" stream-only starts {totals.stream_only}, cursor resets {totals.resets},"
          f" events checked {totals.events}, wall {time.monotonic() - started:.0f}s")
    for failure in totals.failures:
        print(f"torture: failed {failure}")
    print(f"torture: {totals.passed} passed, {totals.failed} failed")
    return 0 if totals.failed == 0 and index > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
