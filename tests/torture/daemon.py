"""The daemon under test, supervised the way systemd would: started again at once
after a SIGKILL, and with a short, growing backoff after it exits on its own
(say, because the database server restarted under it).

Every start appends to one log file, headed ``== start N ==``, so the log of a
failed run tells the whole story.
"""

import re
import signal
import subprocess
import threading
import time
import urllib.request


class Daemon:
    def __init__(self, binary, config, log_path, env):
        self.binary, self.config, self.log_path, self.env = binary, config, log_path, env
        self.proc = None
        self.lock = threading.Lock()
        self.starts = 0
        self.kills = 0
        self.exits = []  # (exit code, seconds it ran) of exits we did not cause
        self.started_at = 0.0
        self.backoff = 0.2
        self.restart_at = None
        self.stopping = False
        self._thread = None

    # -- process ----------------------------------------------------------------
    def _spawn(self):
        self.starts += 1
        with open(self.log_path, "a") as log:
            log.write(f"\n== start {self.starts} at {time.strftime('%H:%M:%S')} ==\n")
        log = open(self.log_path, "a")  # the child keeps its own descriptor
        try:
            self.proc = subprocess.Popen(
                [self.binary, "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=self.env)
        finally:
            log.close()
        self.started_at = time.monotonic()

    def start(self):
        with self.lock:
            self._spawn()
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()

    def _supervise(self):
        while not self.stopping:
            with self.lock:
                self._check()
            time.sleep(0.05)

    def _check(self):
        if self.stopping or self.proc is None:
            return
        code = self.proc.poll()
        if code is None:
            if time.monotonic() - self.started_at > 10:
                self.backoff = 0.2  # it ran a while: the next exit is a fresh problem
            return
        if self.restart_at is None:
            self.exits.append((code, round(time.monotonic() - self.started_at, 1)))
            self.restart_at = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, 3.0)
        elif time.monotonic() >= self.restart_at:
            self.restart_at = None
            self._spawn()

    def kill(self):
        """SIGKILL, reap, and start again at once; returns False when it was not running."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                return False
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.kills += 1
            self._spawn()
            return True

    def kill_only(self):
        """SIGKILL and reap, leaving it down: for reading a cursor nobody moves."""
        self.lock.acquire()
        if self.proc is None or self.proc.poll() is not None:
            self.lock.release()
            return False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.kills += 1
        return True

    def stop_only(self, sig, limit=20):
        """Sends ``sig`` (SIGTERM or SIGKILL) and reaps, leaving it down (the
        supervisor waits) until ``start_again``. Returns ``(was running, exit code,
        or None when a SIGTERM was not obeyed within ``limit`` s and SIGKILL had to)``."""
        self.lock.acquire()
        if self.proc is None or self.proc.poll() is not None:
            return False, None if self.proc is None else self.proc.returncode
        if sig == signal.SIGKILL:
            self.kills += 1
        return True, self._signal_and_reap(sig, limit)

    def start_again(self):
        """Ends a ``kill_only``: starts the daemon and releases the supervisor."""
        try:
            self._spawn()
        finally:
            self.lock.release()

    def running(self):
        with self.lock:
            return self.proc is not None and self.proc.poll() is None

    def stop(self, limit=20):
        """SIGTERM and wait: ``(was running, exit code or None when it had to be killed)``."""
        self.stopping = True
        if self._thread:
            self._thread.join(timeout=5)
        with self.lock:
            if self.proc is None:
                return False, None
            if self.proc.poll() is not None:
                return False, self.proc.returncode
            return True, self._signal_and_reap(signal.SIGTERM, limit)

    def _signal_and_reap(self, sig, limit):
        """Sends ``sig`` and waits: the exit code, or None when it had to be
        killed after ``limit`` s."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            return None

    # -- what it said -------------------------------------------------------------
    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as log:
                return log.read()
        except OSError:
            return ""

    def current_log(self):
        text = self.log_text()
        return text[text.rfind("\n== start "):]

    def log_since(self, start):
        """The log from ``== start <start>`` on (every later start included)."""
        text = self.log_text()
        at = text.find(f"\n== start {start} at ")
        return text[at:] if at >= 0 else ""

    def log_tail(self, lines=25):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def panics(self):
        return [line for line in self.log_text().splitlines() if "panicked" in line]

    def written_events(self):
        """``tidemark_events_written_total`` of the running process, or None."""
        ports = re.findall(r"/metrics on 127\.0\.0\.1:(\d+)", self.current_log())
        if not ports:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[-1]}/metrics", timeout=1) as r:
                text = r.read().decode()
        except OSError:
            return None
        total = 0.0
        for line in text.splitlines():
            if line.startswith("tidemark_events_written_total"):
                total += float(line.rsplit(" ", 1)[1])
        return total
