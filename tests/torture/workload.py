"""The seeded workload: one random step at a time, each one SQL script in one session.

A step is a transaction (or an autocommitted statement) built from changes:
multi-row inserts, bulk loads (Postgres ``COPY``, MariaDB multi-row ``INSERT`` or
``LOAD DATA LOCAL INFILE``), updates (some of the key), deletes, transactions
larger than the daemon's batches, rollbacks, savepoints rolled back to, MariaDB
XA transactions (committed or rolled back after ``XA PREPARE``), ``TRUNCATE``
and ``ALTER TABLE ... ADD COLUMN``. The harness keeps a model of the keys each
table holds only to aim updates and deletes at real rows; the judge never reads
it (the audit table is the oracle), and a failed step just resyncs it.
"""

import glob
import os
import string
from collections import Counter

from engines import TABLES, quote, values_sql

ALPHABET = string.ascii_letters + string.digits + "    .-"
SPICE = ["'", "''", "é", "ß", "日本語", "😀", '"', "{}", ":", ","]
MAX_TABLE_ROWS = 8000
MAX_WIDE_UPDATE = 2000


class Model:
    """The keys each table holds, as far as the harness knows."""

    def __init__(self, next_id=1):
        self.live = {t: set() for t in TABLES}
        self.next_id = next_id

    def copy(self):
        other = Model(self.next_id)
        other.live = {t: set(keys) for t, keys in self.live.items()}
        return other

    def fresh(self, n):
        first = self.next_id
        self.next_id += n
        return list(range(first, first + n))


class Workload:
    """Generates and runs steps; counts what it did."""

    def __init__(self, engine, db, rng, max_batch, tag):
        self.engine, self.db, self.rng = engine, db, rng
        self.max_batch = max_batch
        self.tag = tag
        self.model = Model()
        self.steps = Counter()
        self.failed = Counter()
        self.errors = []
        self.rows = 0
        self.specials = Counter()  # truncates and column adds, a couple per run
        self.weights = self._weights()
        self.must = self._must()

    def _weights(self):
        weights = {
            "insert": 14, "bulk": 12, "update": 12, "pk_update": 6, "delete": 8,
            "big_tx": 7, "rollback": 7, "savepoint": 8, "truncate": 1.5, "add_column": 1.5,
        }
        if self.engine.supports_xa:
            weights["xa_commit"] = 5
            weights["xa_rollback"] = 4
        return weights

    def _must(self):
        """Kinds every run does at least once, early, in a seeded order."""
        must = ["bulk", "big_tx", "rollback", "savepoint", "pk_update", "truncate", "add_column"]
        if self.engine.supports_xa:
            must += ["xa_commit", "xa_rollback"]
        self.rng.shuffle(must)
        return must

    # -- text and rows -----------------------------------------------------------
    def text(self, big_share=0.12):
        rng = self.rng
        n = rng.randint(3000, 9000) if rng.random() < big_share else rng.randint(0, 40)
        text = "".join(rng.choices(ALPHABET, k=n))
        if rng.random() < 0.25:
            at = rng.randint(0, len(text))
            text = text[:at] + rng.choice(SPICE) + text[at:]
        return text

    def new_rows(self, model, n, big_share=0.12):
        return [(i, self.rng.randint(-1000, 1000), self.text(big_share)) for i in model.fresh(n)]

    def pick(self, model, table, n):
        live = model.live[table]
        if not live:
            return []
        return self.rng.sample(sorted(live), min(n, len(live)))

    def table(self):
        return self.rng.choice(TABLES)

    # -- changes: (sql, rows touched), applied to the model as they are generated --
    def c_insert(self, model, n=None):
        table = self.table()
        rows = self.new_rows(model, n or self.rng.randint(1, 50))
        model.live[table].update(r[0] for r in rows)
        return f"INSERT INTO {table} (id, v, t) VALUES {values_sql(rows)};", len(rows)

    def c_bulk(self, model, n=None):
        table = self.table()
        rows = self.new_rows(model, n or self.rng.randint(200, 5000), big_share=0.03)
        model.live[table].update(r[0] for r in rows)
        if self.engine.name == "mariadb":
            sql = self.engine.bulk_insert(table, rows, local_infile=self.rng.random() < 0.3)
        else:
            sql = self.engine.bulk_insert(table, rows)
        return sql, len(rows)

    def c_update(self, model):
        table, rng = self.table(), self.rng
        kind = rng.random()
        if kind < 0.15 and model.live[table]:
            # Many rows at once, by a residue of the key.
            m = max(3, len(model.live[table]) // rng.randint(200, MAX_WIDE_UPDATE))
            r = rng.randrange(m)
            touched = sum(1 for k in model.live[table] if k % m == r)
            return f"UPDATE {table} SET v = v + 1 WHERE id % {m} = {r};", touched
        keys = self.pick(model, table, rng.randint(1, 30))
        if not keys:
            return self.c_insert(model)
        if kind < 0.5:
            ids = ", ".join(map(str, keys))
            return f"UPDATE {table} SET v = v + {rng.randint(1, 9)} WHERE id IN ({ids});", len(keys)
        sql = "\n".join(
            f"UPDATE {table} SET v = {rng.randint(-1000, 1000)}, t = {quote(self.text())}"
            f" WHERE id = {k};" for k in keys[:5])
        return sql, min(len(keys), 5)

    def c_pk_update(self, model):
        table = self.table()
        keys = self.pick(model, table, self.rng.randint(1, 5))
        if not keys:
            return self.c_insert(model)
        statements = []
        for old in keys:
            (new,) = model.fresh(1)
            statements.append(f"UPDATE {table} SET id = {new}, v = v + 1 WHERE id = {old};")
            model.live[table].discard(old)
            model.live[table].add(new)
        return "\n".join(statements), len(keys)

    def c_delete(self, model):
        table, rng = self.table(), self.rng
        live = model.live[table]
        if len(live) > MAX_TABLE_ROWS or (live and rng.random() < 0.1):
            ordered = sorted(live)
            lo = rng.randrange(len(ordered))
            hi = min(len(ordered) - 1, lo + rng.randint(100, max(100, len(ordered) // 2)))
            a, b = ordered[lo], ordered[hi]
            gone = {k for k in live if a <= k <= b}
            live.difference_update(gone)
            return f"DELETE FROM {table} WHERE id BETWEEN {a} AND {b};", len(gone)
        keys = self.pick(model, table, rng.randint(1, 20))
        if not keys:
            return self.c_insert(model)
        live.difference_update(keys)
        return f"DELETE FROM {table} WHERE id IN ({', '.join(map(str, keys))});", len(keys)

    def change(self, model, big=False):
        """One random change; ``big`` favours bulk loads and wide updates."""
        pick = self.rng.random()
        if big and pick < 0.4:
            return self.c_bulk(model, self.rng.randint(self.max_batch, 3 * self.max_batch))
        choices = [(0.35, self.c_insert), (0.6, self.c_update), (0.72, self.c_pk_update),
                   (0.87, self.c_delete), (1.0, self.c_bulk)]
        for limit, make in choices:
            if pick < limit:
                return make(model)
        return self.c_insert(model)

    def changes(self, model, at_least_rows=0, at_most=4):
        """Changes until ``at_least_rows`` rows are touched (or ``at_most`` changes)."""
        parts, rows = [], 0
        for i in range(200):
            if i >= at_most and rows >= at_least_rows:
                break
            sql, n = self.change(model, big=at_least_rows > 0)
            parts.append(sql)
            rows += n
        return "\n".join(parts), rows

    # -- steps: (script, model after commit or None, rows) ------------------------
    def s_insert(self, model):
        sql, rows = self.changes(model, at_most=self.rng.randint(1, 3))
        return self.maybe_tx(sql), rows

    def s_bulk(self, model):
        sql, rows = self.c_bulk(model)
        if self.rng.random() < 0.5:
            more, extra = self.change(model)
            sql, rows = f"{sql}\n{more}", rows + extra
        return self.maybe_tx(sql), rows

    def s_update(self, model):
        sql, rows = self.c_update(model)
        return self.maybe_tx(sql), rows

    def s_pk_update(self, model):
        sql, rows = self.c_pk_update(model)
        return f"BEGIN;\n{sql}\nCOMMIT;", rows

    def s_delete(self, model):
        sql, rows = self.c_delete(model)
        return self.maybe_tx(sql), rows

    def s_big_tx(self, model):
        need = self.rng.randint(self.max_batch + 1, 4 * self.max_batch)
        sql, rows = self.changes(model, at_least_rows=need, at_most=3)
        return f"BEGIN;\n{sql}\nCOMMIT;", rows

    def s_rollback(self, model):
        scratch = model.copy()
        big = self.rng.random() < 0.4
        sql, _ = self.changes(scratch, at_least_rows=self.max_batch * 2 if big else 0)
        model.next_id = scratch.next_id
        return f"BEGIN;\n{sql}\nROLLBACK;", 0

    def s_savepoint(self, model):
        rng = self.rng
        kept_a, rows_a = self.changes(model, at_most=rng.randint(1, 2))
        scratch = model.copy()
        lost, _ = self.changes(scratch, at_least_rows=self.max_batch if rng.random() < 0.3 else 0)
        model.next_id = scratch.next_id
        big = rng.random() < 0.5
        kept_c, rows_c = self.changes(model, at_least_rows=self.max_batch * 2 if big else 0)
        script = [f"BEGIN;\n{kept_a}\nSAVEPOINT s1;\n{lost}\nROLLBACK TO SAVEPOINT s1;\n{kept_c}"]
        rows = rows_a + rows_c
        if rng.random() < 0.5:
            kept_d, rows_d = self.changes(model, at_most=2)
            script.append(f"SAVEPOINT s2;\n{kept_d}\nRELEASE SAVEPOINT s2;")
            rows += rows_d
        script.append("COMMIT;")
        return "\n".join(script), rows

    def s_xa_commit(self, model):
        """XA START .. XA END, then XA PREPARE + XA COMMIT, or XA COMMIT .. ONE PHASE."""
        xid = self.xid()
        sql, rows = self.changes(model, at_least_rows=self.max_batch * 2 if self.rng.random() < 0.3 else 0)
        head = f"XA START {xid};\n{sql}\nXA END {xid};\n"
        if self.rng.random() < 0.75:
            return head + f"XA PREPARE {xid};\nXA COMMIT {xid};", rows
        return head + f"XA COMMIT {xid} ONE PHASE;", rows

    def s_xa_rollback(self, model):
        """XA START .. XA END, XA PREPARE, then XA ROLLBACK: nothing of it committed."""
        xid = self.xid()
        scratch = model.copy()
        sql, _ = self.changes(scratch, at_least_rows=self.max_batch * 2 if self.rng.random() < 0.3 else 0)
        model.next_id = scratch.next_id
        return f"XA START {xid};\n{sql}\nXA END {xid};\nXA PREPARE {xid};\nXA ROLLBACK {xid};", 0

    def xid(self):
        return f"'{self.tag}x{sum(self.steps.values())}'"

    def s_truncate(self, model):
        table = self.table()
        model.live[table].clear()
        sql = self.engine.truncate(table)
        if self.engine.name == "pg" and self.rng.random() < 0.5:
            rows = self.new_rows(model, self.rng.randint(1, 20))
            model.live[table].update(r[0] for r in rows)
            sql = f"BEGIN;\n{sql}\nINSERT INTO {table} (id, v, t) VALUES {values_sql(rows)};\nCOMMIT;"
        return sql, 0

    def s_add_column(self, model):
        del model
        n = self.specials["add_column"]
        return self.engine.add_column(self.table(), f"extra{n}", self.rng.randint(1, 99)), 0

    def maybe_tx(self, sql):
        return f"BEGIN;\n{sql}\nCOMMIT;" if self.rng.random() < 0.5 else sql

    # -- running ------------------------------------------------------------------
    def choose(self):
        """Every other step is a kind the run still owes, until none is owed."""
        if self.must and sum(self.steps.values()) % 2 == 1:
            return self.must.pop()
        names = [n for n in self.weights
                 if n not in ("truncate", "add_column") or self.specials[n] < 2]
        name = self.rng.choices(names, weights=[self.weights[n] for n in names])[0]
        if name in self.must:
            self.must.remove(name)
        return name

    def step(self, name=None):
        """Runs one step (of kind ``name``, else a random one); returns its name."""
        name = name or self.choose()
        if name in self.must:
            self.must.remove(name)
        if name in ("truncate", "add_column"):
            self.specials[name] += 1
        model = self.model.copy()
        script, rows = getattr(self, "s_" + name)(model)
        self.steps[name] += 1
        if self.run_script(script, name):
            self.model = model
            self.rows += rows
        else:
            self.model.next_id = model.next_id
        return name

    def run_script(self, script, name):
        try:
            self.engine.execute(self.db, script)
            return True
        except Exception as error:  # noqa: BLE001 - any failure: the audit table decides
            self.failed[name] += 1
            self.errors.append(f"{name}: {str(error)[:300]}")
            self.resync()
            return False
        finally:
            for path in glob.glob(str(self.engine_tmp()) + "/*.tsv"):
                os.unlink(path)

    def engine_tmp(self):
        return getattr(self.engine, "tmp", "/nonexistent")

    def resync(self):
        """After a failed step: clean up, and read the keys back from the database."""
        try:
            self.engine.after_failure(self.db)
            for table in TABLES:
                self.model.live[table] = self.engine.keys(self.db, table)
        except Exception:  # noqa: BLE001 - the server may be down; the next step retries
            pass

    def prepopulate(self):
        """Rows for the initial snapshot, some of them TOASTed."""
        for table in TABLES:
            rows = self.new_rows(self.model, self.rng.randint(300, 3000), big_share=0.05)
            self.engine.execute(self.db, self.engine.bulk_insert(table, rows))
            self.model.live[table].update(r[0] for r in rows)
            self.rows += len(rows)
