"""Faults while the workload runs: SIGKILLs of the daemon at seeded moments, and a
watcher that samples the committed cursor.

Most kills wait, after their seeded moment, until the sink is seen growing (the
daemon is in the middle of writing, likely inside a large transaction), then
wait a seeded few milliseconds more: a kill while idle proves little. Each kill
reads the cursor while the daemon is down (nobody can move it then) before
starting the daemon again. The run holds ``Killer.hold`` while it stops the
daemon itself (a cursor reset, and the new snapshot after it): kills due then
wait until it lets go.
"""

import threading
import time


class Killer(threading.Thread):
    def __init__(self, daemon, sink, rng, moments, cursors):
        super().__init__(daemon=True)
        self.proc, self.sink, self.rng = daemon, sink, rng
        self.moments = moments  # seconds after start()
        self.cursors = cursors
        self.stop_event = threading.Event()
        self.t0 = None
        self.progress_triggered = 0
        self.hold = threading.Lock()  # held by the run while kills must wait

    def begin(self):
        self.t0 = time.monotonic()
        self.start()

    def finish(self):
        self.stop_event.set()
        self.join(timeout=30)

    def run(self):
        for moment in self.moments:
            if self.stop_event.wait(max(0.0, self.t0 + moment - time.monotonic())):
                return
            if self.rng.random() < 0.75 and self.wait_for_writes(limit=3.0):
                self.progress_triggered += 1
            if self.stop_event.wait(self.rng.uniform(0.0, 0.03)):
                return
            self.wait_until_running(limit=15.0)
            with self.hold:  # not while the run stops the daemon itself (a cursor reset)
                if self.proc.kill_only():
                    try:
                        self.cursors.sample(after_kill=True)
                    finally:
                        self.proc.start_again()

    def wait_until_running(self, limit):
        """A kill is owed even while the daemon waits out a backoff: wait for it."""
        deadline = time.monotonic() + limit
        while not self.proc.running() and time.monotonic() < deadline:
            if self.stop_event.wait(0.05):
                return

    def probe(self):
        value = self.sink.progress()
        return value if value is not None else self.proc.written_events()

    def wait_for_writes(self, limit):
        """True once the sink grows in two polls running (a transaction is streaming)."""
        last = self.probe()
        grew = 0
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not self.stop_event.is_set():
            time.sleep(0.004 if self.sink.name == "file" else 0.03)
            now = self.probe()
            grew = grew + 1 if (last is not None and now is not None and now != last) else 0
            last = now
            if grew >= 2:
                return True
        return False


class CursorWatch(threading.Thread):
    """Samples the committed cursor: every distinct value, and each one seen after a kill."""

    def __init__(self, sink, interval):
        super().__init__(daemon=True)
        self.sink, self.interval = sink, interval
        self.samples = []  # (position JSON, position_text, after_kill)
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self._last = None

    def sample(self, after_kill=False):
        cursor = self.sink.cursor()
        if not cursor or "position" not in cursor:
            return
        text = cursor.get("position_text")
        with self.lock:
            if after_kill or text != self._last:
                self.samples.append((cursor["position"], text, after_kill))
                self._last = text

    def run(self):
        while not self.stop_event.wait(self.interval):
            self.sample()

    def finish(self):
        self.stop_event.set()
        self.join(timeout=10)
        self.sample()
