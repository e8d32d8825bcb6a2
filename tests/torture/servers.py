"""The harness's own database servers, never the shared ones.

PostgreSQL 15 listens on 127.0.0.1:5441 and MariaDB 10.11 on 127.0.0.1:3311,
both with their data under the torture directory (``/tmp/tidemark-torture`` by
default, ``TORTURE_DIR`` to move it). ``ensure()`` creates and starts a server
idempotently; ``restart()`` restarts it the hard or the gentle way while the
daemon under test is connected. The command-line clients (``psql``,
``mariadb``) are the only way the harness talks SQL.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

BASE = Path(os.environ.get("TORTURE_DIR", "/tmp/tidemark-torture"))
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PORT = 5441
MY_PORT = 3311


class SqlError(RuntimeError):
    """A client exited non-zero; the message holds its stderr."""


def wait_for(what, check, limit, interval=0.1):
    """Polls ``check`` until it is true; raises after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {limit:.0f}s waiting for {what}")
        time.sleep(interval)


def run(cmd, *, user=None, input_text=None, timeout=120, check=True):
    """Runs a command (as ``user`` when given); returns its stdout."""
    if user:
        cmd = ["runuser", "-u", user, "--"] + list(cmd)
    env = dict(os.environ, PGCLIENTENCODING="UTF8", LC_ALL="C.UTF-8")
    proc = subprocess.run(
        cmd, input=input_text, capture_output=True, timeout=timeout, env=env,
        encoding="utf-8", errors="replace",
    )
    if check and proc.returncode != 0:
        raise SqlError(f"{' '.join(map(str, cmd[:6]))}...: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


class Postgres:
    """A PostgreSQL cluster of the harness's own, run as the postgres user."""

    name = "pg"
    port = PG_PORT

    def __init__(self, base=BASE):
        self.dir = base / "pg"
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"

    def ensure(self):
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        if not self.ready():
            self._ctl("start", "-l", str(self.log))
        wait_for("PostgreSQL on 5441", self.ready, 60)

    def _initdb(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir.parent, 0o755)
        run(["chown", "-R", "postgres:postgres", str(self.dir)])
        run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"], user="postgres")
        settings = {
            "port": str(PG_PORT),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.dir}'",
            "wal_level": "logical",
            "max_replication_slots": "64",
            "max_wal_senders": "64",
            "track_commit_timestamp": "on",
            "shared_buffers": "64MB",
            "fsync": "on",
            "synchronous_commit": "on",
            "log_min_messages": "warning",
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# tidemark torture\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def _ctl(self, *args, wait=120):
        run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", str(int(wait)), *args],
            user="postgres", timeout=wait + 60)

    def ready(self):
        proc = subprocess.run(
            ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(PG_PORT)], timeout=30
        )
        return proc.returncode == 0

    def restart(self, hard, fast_limit=10):
        """``pg_ctl restart -m immediate`` (hard: crash recovery) or ``-m fast``.

        Returns ``(what was done, problem or None)``. A fast shutdown waits for
        every walsender's client to confirm all WAL sent; one that is still
        waiting after ``fast_limit`` seconds is a problem of the client's, and
        the restart goes on with ``-m immediate``.
        """
        mode = "immediate" if hard else "fast"
        problem = None
        try:
            self._ctl("restart", "-m", mode, "-l", str(self.log), wait=fast_limit)
        except SqlError:
            if hard:
                raise
            problem = (f"PostgreSQL fast shutdown blocked for {fast_limit} s while the daemon"
                       " was connected (its walsender waits for a flush confirmation that never"
                       " comes); went on with -m immediate")
            self._ctl("restart", "-m", "immediate", "-l", str(self.log))
        wait_for("PostgreSQL to come back", self.ready, 120)
        return f"pg_ctl restart -m {mode}" + (" (blocked)" if problem else ""), problem

    def psql(self, db, sql, timeout=120, check=True):
        """Runs a script in one session, stopping at the first error."""
        return run(
            ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(PG_PORT), "-U", "postgres", "-d", db, "-f", "-"],
            input_text=sql, timeout=timeout, check=check,
        )


class Mariadb:
    """A mariadbd of the harness's own: own datadir, socket, pid file and port."""

    name = "mariadb"
    port = MY_PORT

    def __init__(self, base=BASE):
        self.dir = base / "mariadb"
        self.data = self.dir / "data"
        self.socket = self.dir / "mariadb.sock"
        self.pid_file = self.dir / "mariadb.pid"
        self.log = self.dir / "error.log"

    def ensure(self):
        if not (self.data / "mysql").is_dir():
            self._install()
        if not self.ready():
            self._start()
        run(["mariadb", "-uroot", "-S", str(self.socket), "-e",
             "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';"
             " GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION"])

    def _install(self):
        self.data.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir.parent, 0o755)
        run(["chown", "-R", "mysql:mysql", str(self.dir)])
        run(["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={self.data}",
             "--auth-root-authentication-method=normal", "--skip-test-db"], timeout=300)

    def _start(self):
        args = [
            "/usr/sbin/mariadbd", "--no-defaults", "--user=mysql", f"--datadir={self.data}",
            f"--port={MY_PORT}", "--bind-address=127.0.0.1", f"--socket={self.socket}",
            f"--pid-file={self.pid_file}", f"--log-error={self.log}",
            "--server-id=11", "--log-bin=mariadb-bin", "--binlog-format=ROW",
            "--binlog-row-image=FULL", "--binlog-row-metadata=FULL",
            "--binlog-checksum=CRC32", "--sync-binlog=1", "--max-binlog-size=8M",
            "--innodb-flush-log-at-trx-commit=1", "--innodb-buffer-pool-size=128M",
            "--max-allowed-packet=64M", "--local-infile=1", "--skip-name-resolve",
            "--max-connections=200",
        ]
        # Daemonized (not our child): the server outlives the harness, like a service.
        run(["start-stop-daemon", "--start", "--oknodo", "--background",
             "--pidfile", str(self.pid_file), "--exec", args[0], "--", *args[1:]])
        wait_for("MariaDB on 3311", self.ready, 120, interval=0.2)

    def ready(self):
        proc = subprocess.run(
            ["mariadb-admin", "-uroot", "-h127.0.0.1", f"-P{MY_PORT}", "--protocol=TCP",
             "--connect-timeout=2", "ping"], capture_output=True, timeout=30)
        return proc.returncode == 0

    def _pid(self):
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def restart(self, hard):
        """SIGKILL (hard: crash recovery) or SIGTERM the server, then start it again."""
        pid = self._pid()
        if pid is None:
            raise RuntimeError(f"no MariaDB pid in {self.pid_file}")
        os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
        wait_for("mariadbd to exit", lambda: not _alive(pid), 120)
        self._start()
        return "mariadbd " + ("SIGKILL" if hard else "SIGTERM") + " and start", None

    def client_args(self, db=None):
        args = ["mariadb", "-uroot", "-h127.0.0.1", f"-P{MY_PORT}", "--protocol=TCP",
                "--local-infile=1", "--default-character-set=utf8mb4"]
        return args + ([db] if db else [])

    def sql(self, db, sql, timeout=120, check=True):
        """Runs a script in one session (``-N -B -r``: raw tab-separated rows)."""
        return run(self.client_args(db) + ["-N", "-B", "-r"], input_text=sql,
                   timeout=timeout, check=check)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
