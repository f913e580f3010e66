"""Pipe mode end to end on the test cluster: containers read their inputs from
named pipes at <LocalPath>_0 while they run, from S3 (moto's server on the
cluster's bridge) and from file:// data, plain and Gzip, replicated and
sharded over 2 hosts; each writes what it read to an output, checked byte for byte."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from tests.cluster.jobs import S3Env, file_input, job_doc, s3_input, s3_output

pytestmark = pytest.mark.cluster

# The container: for each input named on its command line, whether <LocalPath>_0 is a
# named pipe, then every byte read from it to EOF, copied to <host>-<input>.bin.
READER = """\
import json, os, stat, sys
host = json.load(open('/opt/ml/config/resourceconfig.json'))['current_host']
out = '/opt/ml/processing/output/'
seen = {}
for name in sys.argv[1:]:
    pipe = '/opt/ml/processing/input/' + name + '_0'
    seen[name] = {'fifo': stat.S_ISFIFO(os.stat(pipe).st_mode), 'folder': os.path.isdir(pipe[:-2])}
    with open(pipe, 'rb') as src, open(out + host + '-' + name + '.bin', 'wb') as dst:
        while True:
            chunk = src.read(65536)
            if not chunk:
                break
            dst.write(chunk)
open(out + host + '.json', 'w').write(json.dumps(seen))
"""


def pipe(item: dict[str, Any], compression: str = "None") -> dict[str, Any]:
    item["S3Input"].update(S3InputMode="Pipe", S3CompressionType=compression)
    return item


def body(client: Any, bucket: str, key: str) -> bytes:
    data: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def test_pipes_stream_plain_and_gzip_replicated_and_sharded_into_running_containers(s3env: S3Env) -> None:
    """2 hosts: every byte of each host's objects, in key order, decompressed when Gzip, then EOF."""
    s3 = s3env.moto.client()
    s3.create_bucket(Bucket="pipes")
    s3.put_object(Bucket="pipes", Key="code/read.py", Body=READER.encode())
    # Replicated, plain: larger than a pipe's buffer, so the writer waits on the reader.
    plain = {f"plain/part-{i}": bytes([65 + i]) * (200_000 + i) for i in range(3)}
    # Sharded, Gzip: five objects dealt by key, two of them several gzip members.
    rows = {f"gz/part-{i}.gz": b"".join(b"%d,%d\n" % (i, n) for n in range(20_000 * (i + 1))) for i in range(5)}
    for key, data in plain.items():
        s3.put_object(Bucket="pipes", Key=key, Body=data)
    for key, data in rows.items():
        packed = gzip.compress(data) if key[-4] in "024" else gzip.compress(data[:100]) + gzip.compress(data[100:])
        s3.put_object(Bucket="pipes", Key=key, Body=packed)
    # file:// (distproc's extension), sharded, plain.
    (s3env.data / "local").mkdir()
    local = {f"f-{i}.txt": f"file {i}\n".encode() * 1000 for i in range(3)}
    for name, data in local.items():
        (s3env.data / "local" / name).write_bytes(data)
    files_uri = str(s3env.data / "local") + "/"
    doc = job_doc(
        "pipe-main",
        count=2,
        entrypoint=["python3", "/opt/ml/processing/code/read.py", "plain", "gz", "files"],
        inputs=[
            s3_input("code", "s3://pipes/code/", "/opt/ml/processing/code"),
            pipe(s3_input("plain", "s3://pipes/plain/", "/opt/ml/processing/input/plain")),
            pipe(s3_input("gz", "s3://pipes/gz/", "/opt/ml/processing/input/gz", "ShardedByS3Key"), "Gzip"),
            pipe(file_input("files", files_uri, "/opt/ml/processing/input/files", "ShardedByS3Key")),
        ],
        outputs=[s3_output("out", "s3://pipes/out/", "/opt/ml/processing/output")],
    )
    result = s3env.run_job(doc)
    assert result.returncode == 0, result.stderr
    for k, host in ((0, "algo-1"), (1, "algo-2")):
        assert json.loads(body(s3, "pipes", f"out/{host}.json")) == {
            name: {"fifo": True, "folder": True} for name in ("plain", "gz", "files")
        }
        assert body(s3, "pipes", f"out/{host}-plain.bin") == b"".join(plain[key] for key in sorted(plain))
        shard = sorted(rows)[k::2]
        assert body(s3, "pipes", f"out/{host}-gz.bin") == b"".join(rows[key] for key in shard)
        files = sorted(local)[k::2]
        assert body(s3, "pipes", f"out/{host}-files.bin") == b"".join(local[name] for name in files)
    assert s3env.describe("pipe-main")["ProcessingJobStatus"] == "Completed"


def test_bad_gzip_fails_the_job_naming_the_object_and_an_unread_pipe_does_not_hold_it(s3env: S3Env) -> None:
    """An object that is not gzip: the reader is stopped (no cut stream taken for the whole), ClientError names
    it; a second pipe the container never opens ends with the container."""
    s3 = s3env.moto.client()
    s3.create_bucket(Bucket="pipes-bad")
    s3.put_object(Bucket="pipes-bad", Key="code/read.py", Body=READER.encode())
    s3.put_object(Bucket="pipes-bad", Key="gz/a.gz", Body=gzip.compress(b"good\n"))
    s3.put_object(Bucket="pipes-bad", Key="gz/b.gz", Body=b"plain text, not gzip")
    s3.put_object(Bucket="pipes-bad", Key="unread/x", Body=b"never read")
    doc = job_doc(
        "pipe-bad",
        count=1,
        entrypoint=["python3", "/opt/ml/processing/code/read.py", "gz"],
        inputs=[
            s3_input("code", "s3://pipes-bad/code/", "/opt/ml/processing/code"),
            pipe(s3_input("gz", "s3://pipes-bad/gz/", "/opt/ml/processing/input/gz"), "Gzip"),
            pipe(s3_input("unread", "s3://pipes-bad/unread/", "/opt/ml/processing/input/unread")),
        ],
        outputs=[s3_output("out", "s3://pipes-bad/out/", "/opt/ml/processing/output")],
    )
    result = s3env.run_job(doc)
    assert result.returncode == 1
    described = s3env.describe("pipe-bad")
    assert described["ProcessingJobStatus"] == "Failed"
    reason = described["FailureReason"]
    assert reason.startswith("ClientError: "), reason
    assert "input gz: s3://pipes-bad/gz/b.gz is not valid gzip data" in reason
    # The reader was killed while it waited for more: it never finished its report.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="pipes-bad", Prefix="out/").get("Contents", ())]
    assert "out/algo-1.json" not in keys
