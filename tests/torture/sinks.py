"""Reading back what the daemon wrote: the file sink's JSON lines or a Kinesis
stream (boto3, every shard from TRIM_HORIZON), and its cursor (file or DynamoDB).

Each sink gives ``setup()``, ``tail()`` (new events since the last call, for
waiting on a fence row), ``read_all()`` (every event, for the judge),
``progress()`` (a number that grows while the daemon writes) and ``cursor()``
(the committed position as JSON, or None), plus the ``[sink]``/``[cursor]``
TOML for the daemon's config.
"""

import json
import os
import shutil
import time
from pathlib import Path

KINESIS = "http://127.0.0.1:4567"
DYNAMODB = "http://127.0.0.1:4568"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "AWS_ENDPOINT_URL_KINESIS": KINESIS,
    "AWS_ENDPOINT_URL_DYNAMODB": DYNAMODB,
}


class FileSink:
    """``[sink] type = "file"`` with a file cursor, in the run's own directory."""

    name = "file"
    exactly_once = True

    def __init__(self, run_dir, rng):
        self.dir = Path(run_dir)
        self.events_dir = self.dir / "events"
        self.cursor_path = self.dir / "cursor.json"
        self.max_file_bytes = rng.choice([262144, 1048576, 8388608])
        self._offsets = {}

    def setup(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        self.events_dir.mkdir(parents=True)

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def toml(self):
        return (f'[sink]\ntype = "file"\npath = "{self.events_dir}"\n'
                f"max_file_bytes = {self.max_file_bytes}\n\n"
                f'[cursor]\ntype = "file"\npath = "{self.cursor_path}"\n')

    def files(self):
        try:
            return sorted(self.events_dir.glob("events-*.jsonl"))
        except FileNotFoundError:
            return []

    def progress(self):
        total = 0
        for path in self.files():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def tail(self, needle=None):
        """Whole lines written since the last call (a torn last line waits); with
        ``needle``, only the lines that contain it."""
        events = []
        for path in self.files():
            offset = self._offsets.get(path, 0)
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                if needle is None or needle in line:
                    events.append(json.loads(line))
            self._offsets[path] = offset + end
        return events

    def read_all(self):
        """Every whole line, in file order: ``(events, torn tail bytes)``."""
        events, torn = [], 0
        for path in self.files():
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            torn += len(data) - end
            events.extend(json.loads(line) for line in data[:end].splitlines())
        return events, torn

    def cursor(self):
        try:
            return json.loads(self.cursor_path.read_text())
        except (OSError, ValueError):
            return None


class KinesisSink:
    """``[sink] type = "kinesis"`` with a DynamoDB cursor, both named for the run."""

    name = "kinesis"
    exactly_once = False

    def __init__(self, run_dir, rng, name):
        self.dir = Path(run_dir)
        self.stream = name
        self.table = name
        self.shards = rng.randint(1, 4)
        self.aggregate = rng.random() < 0.3
        self.kinesis, self.dynamodb = _clients()
        self._iterators = None
        self.seen = []
        self.pipeline = None

    def setup(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.teardown()
        self.kinesis.create_stream(StreamName=self.stream, ShardCount=self.shards)
        _wait("the stream to be active", lambda: self._stream_status() == "ACTIVE", 30)

    def teardown(self):
        for call in (lambda: self.kinesis.delete_stream(StreamName=self.stream),
                     lambda: self.dynamodb.delete_table(TableName=self.table)):
            try:
                call()
            except Exception:  # noqa: BLE001 - absent is fine
                pass
        _wait("the old stream to go", lambda: self._stream_status() is None, 30)
        _wait("the old table to go", lambda: not self._table_exists(), 30)

    def _stream_status(self):
        try:
            return self.kinesis.describe_stream(StreamName=self.stream)[
                "StreamDescription"]["StreamStatus"]
        except self.kinesis.exceptions.ResourceNotFoundException:
            return None

    def _table_exists(self):
        try:
            self.dynamodb.describe_table(TableName=self.table)
            return True
        except self.dynamodb.exceptions.ResourceNotFoundException:
            return False

    def toml(self):
        return (f'[sink]\ntype = "kinesis"\nstream = "{self.stream}"\n'
                f"aggregate = {'true' if self.aggregate else 'false'}\n\n"
                f'[cursor]\ntype = "dynamodb"\ntable = "{self.table}"\nlease_duration = "3s"\n')

    def progress(self):
        return None  # the daemon's metrics tell instead (see daemon.py)

    def _shard_ids(self):
        shards = self.kinesis.list_shards(StreamName=self.stream)["Shards"]
        return [s["ShardId"] for s in shards]

    def _iterator(self, shard):
        return self.kinesis.get_shard_iterator(
            StreamName=self.stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]

    def _drain(self, iterators, out):
        """Reads each shard to its current end; keeps the iterators for next time."""
        for shard, iterator in list(iterators.items()):
            for _ in range(100000):
                page = self.kinesis.get_records(ShardIterator=iterator, Limit=1000)
                iterator = page.get("NextShardIterator") or iterator
                for record in page["Records"]:
                    for line in record["Data"].split(b"\n"):
                        if line.strip():
                            out.append((shard, json.loads(line)))
                if not page["Records"]:
                    break
            iterators[shard] = iterator

    def tail(self, needle=None):
        """New events since the last call; every one read is kept for ``read_all_shards``."""
        del needle  # records are parsed anyway: the judge needs them all
        if self._iterators is None:
            self._iterators = {s: self._iterator(s) for s in self._shard_ids()}
        out = []
        self._drain(self._iterators, out)
        self.seen.extend(out)
        return [event for _, event in out]

    def read_all_shards(self):
        """Every record of every shard since TRIM_HORIZON: ``[(shard, event)]`` in shard order."""
        self.tail()
        return list(self.seen)

    def cursor(self):
        try:
            item = self.dynamodb.get_item(
                TableName=self.table, Key={"pipeline": {"S": self.pipeline}},
                ConsistentRead=True).get("Item")
        except Exception:  # noqa: BLE001 - not created yet, or the emulator is busy
            return None
        if not item or "position" not in item:
            return None
        return {"position": json.loads(item["position"]["S"]),
                "position_text": item.get("position_text", {}).get("S")}


def _clients():
    """Kinesis and DynamoDB clients for the emulators, with short timeouts."""
    import boto3  # only Kinesis runs need it (installed by scripts/torture.sh)
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    config = Config(connect_timeout=3, read_timeout=20, retries={"max_attempts": 3})
    return (session.client("kinesis", endpoint_url=KINESIS, config=config),
            session.client("dynamodb", endpoint_url=DYNAMODB, config=config))


def _wait(what, check, limit):
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def make_sink(kind, run_dir, rng, name):
    if kind == "file":
        return FileSink(run_dir, rng)
    return KinesisSink(run_dir, rng, name)


def purge_aws_leftovers():
    """Deletes the ``tt_*`` streams and cursor tables earlier invocations kept."""
    kinesis, dynamodb = _clients()
    streams, page = [], {"HasMoreStreams": True, "StreamNames": []}
    while page.get("HasMoreStreams"):
        start = {"ExclusiveStartStreamName": streams[-1]} if streams else {}
        page = kinesis.list_streams(Limit=100, **start)
        streams += page.get("StreamNames", [])
        if not page.get("StreamNames"):
            break
    tables, start = [], {}
    while True:
        page = dynamodb.list_tables(Limit=100, **start)
        tables += page.get("TableNames", [])
        if "LastEvaluatedTableName" not in page:
            break
        start = {"ExclusiveStartTableName": page["LastEvaluatedTableName"]}
    for stream in streams:
        if stream.startswith("tt_"):
            kinesis.delete_stream(StreamName=stream)
    for table in tables:
        if table.startswith("tt_"):
            dynamodb.delete_table(TableName=table)


def env():
    return dict(os.environ, **AWS_ENV)
