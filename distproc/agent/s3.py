"""S3 transfers on the host: inputs down, outputs up, continuous uploads.

boto3 and botocore are imported inside the functions: the agent itself is
standard library only, and the coordinator ships these libraries (see
distproc/hosts/depsbundle.py) only to jobs that use S3. parse_s3_uri is pure and
shared with the coordinator.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
import time
import uuid
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import unquote, urlparse

# S3 error codes that are faults of the job (its bucket, keys or credentials), not of
# the platform: the one set, also read by the coordinator's staging/s3.py. The agent's
# own codes (UnsafeKey, SizeMismatch) are classed where they are raised, not here.
CLIENT_CODES = frozenset(
    {
        "NoSuchBucket",
        "NoSuchKey",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllBucketsNotFound",
        "404",
        "403",
        "InvalidBucketName",
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
    }
)
MULTIPART_BYTES = 8 * 1024 * 1024


class S3TransferError(Exception):
    """A transfer failed; the message names bucket and key and the cause."""

    def __init__(self, message: str, key: str = "", code: str = "", client_error: bool = True) -> None:
        self.key = key
        self.code = code
        self.client_error = client_error
        super().__init__(message)


_VIRTUAL = re.compile(r"^(?P<bucket>.+)\.s3(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com$")
_PATH = re.compile(r"^s3(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com$")


def parse_s3_uri(uri: str) -> Tuple[str, str]:
    """(bucket, key or prefix) of an s3:// or https:// S3 URI."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "s3":
        if not parsed.netloc:
            raise ValueError("{}: no bucket in the S3 URI".format(uri))
        return parsed.netloc, unquote(parsed.path[1:])
    if scheme == "https":
        host = (parsed.hostname or "").lower()
        virtual = _VIRTUAL.match(host)
        if virtual and not _PATH.match(host):
            return virtual.group("bucket"), unquote(parsed.path[1:])
        if _PATH.match(host):
            bucket, _, key = parsed.path[1:].partition("/")
            if bucket:
                return bucket, unquote(key)
        raise ValueError(
            "{}: not an S3 https:// URI (bucket.s3.amazonaws.com/key or s3.amazonaws.com/bucket/key)".format(uri)
        )
    raise ValueError("{}: not an s3:// or https:// URI".format(uri))


def _error(exc: BaseException, bucket: str, key: str) -> S3TransferError:
    where = "s3://{}/{}".format(bucket, key)
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {})
        code = str(err.get("Code", "")) or "Unknown"
        text = err.get("Message") or code
        return S3TransferError("{}: {}: {}".format(where, code, text), key, code, code in CLIENT_CODES)
    name = type(exc).__name__
    client = name in ("NoCredentialsError", "PartialCredentialsError")
    return S3TransferError("{}: {}: {}".format(where, name, exc), key, name, client)


def make_client(conf: Dict[str, Any]) -> Any:
    """An S3 client from the task's settings (None credentials: the host's own chain)."""
    import boto3
    from botocore.config import Config

    endpoint = conf.get("endpoint_url")
    config = Config(
        retries={"mode": "standard", "max_attempts": int(conf.get("max_attempts", 5))},
        connect_timeout=float(conf.get("connect_timeout", 10)),
        read_timeout=float(conf.get("read_timeout", 60)),
        max_pool_connections=int(conf.get("max_pool_connections", 32)),
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    kwargs: Dict[str, Any] = {"config": config}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if conf.get("region"):
        kwargs["region_name"] = conf["region"]
    creds = conf.get("credentials")
    if creds:
        kwargs["aws_access_key_id"] = creds["access_key_id"]
        kwargs["aws_secret_access_key"] = creds["secret_access_key"]
        kwargs["aws_session_token"] = creds.get("session_token")
    return boto3.session.Session().client("s3", **kwargs)


def _safe_target(dest_root: str, rel: str, bucket: str, key: str) -> str:
    parts = rel.split("/")
    root = os.path.realpath(dest_root)
    target = os.path.realpath(os.path.join(root, rel))
    if not rel or rel.startswith("/") or ".." in parts or not target.startswith(root + os.sep):
        raise S3TransferError(
            "s3://{}/{}: the key would land outside LocalPath ({!r}); refused".format(bucket, key, rel),
            key,
            "UnsafeKey",
            True,
        )
    return target


def download_objects(
    client: Any,
    objects: List[Dict[str, Any]],
    dest_root: str,
    concurrency: int = 16,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Tuple[int, int]:
    """Download objects ({"bucket","key","size","rel"}) under dest_root; (files, bytes).

    Every key is checked before anything is written; each file lands under a
    temporary name and is renamed once its size matches the listing.
    """
    targets = [_safe_target(dest_root, str(o["rel"]), str(o["bucket"]), str(o["key"])) for o in objects]
    lock = threading.Lock()
    done = [0, 0]
    last = [0.0]

    def one(obj: Dict[str, Any], target: str) -> None:
        bucket, key, size = str(obj["bucket"]), str(obj["key"]), int(obj["size"])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = "{}.distproc-partial-{}".format(target, uuid.uuid4().hex[:8])
        try:
            if size < MULTIPART_BYTES:
                # One GET: the listing already gave the size, so download_file's HEAD would
                # double the requests, which is what bounds the rate for small objects.
                body = client.get_object(Bucket=bucket, Key=key)["Body"]
                with open(tmp, "wb") as out:
                    for chunk in body.iter_chunks(1 << 20):
                        out.write(chunk)
            else:
                client.download_file(bucket, key, tmp)  # ranged GETs in parallel
            got = os.path.getsize(tmp)
            if got != size:
                raise S3TransferError(
                    "s3://{}/{}: got {} bytes, listed {}".format(bucket, key, got, size), key, "SizeMismatch", False
                )
            os.replace(tmp, target)
        except S3TransferError:
            _unlink(tmp)
            raise
        except Exception as exc:
            _unlink(tmp)
            raise _error(exc, bucket, key) from exc
        with lock:
            done[0] += 1
            done[1] += size
            now = time.monotonic()
            if progress is not None and now - last[0] >= 0.5:
                last[0] = now
                progress(done[0], done[1])

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(one, o, t) for o, t in zip(objects, targets)]  # noqa: B905 - same length by construction; 3.9 has no strict=
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
    if progress is not None:
        progress(done[0], done[1])
    return done[0], done[1]


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _scan(root: str) -> Dict[str, Tuple[int, int]]:
    """rel -> (size, mtime_ns) of every regular file; symbolic links are skipped."""
    found: Dict[str, Tuple[int, int]] = {}
    if not os.path.isdir(root):
        return found
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                found[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return found


def _upload(client: Any, root: str, bucket: str, prefix: str, files: List[str], concurrency: int) -> None:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES, use_threads=False)

    def one(rel: str) -> None:
        key = prefix + rel
        try:
            client.upload_file(os.path.join(root, rel), bucket, key, Config=config)
        except Exception as exc:
            raise _error(exc, bucket, key) from exc

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for future in [pool.submit(one, rel) for rel in files]:
            future.result()


def upload_tree(
    client: Any,
    root: str,
    bucket: str,
    prefix: str,
    concurrency: int = 16,
    already: Optional[Dict[str, Tuple[int, int]]] = None,
) -> Dict[str, Tuple[int, int]]:
    """Upload every regular file under root to prefix + its relative path.

    Files whose (size, mtime) match `already` were uploaded before and are
    skipped. Returns the map of everything uploaded.
    """
    uploaded = dict(already or {})
    current = _scan(root)
    todo = sorted(rel for rel, sig in current.items() if uploaded.get(rel) != sig)
    _upload(client, root, bucket, prefix, todo, concurrency)
    for rel in todo:
        uploaded[rel] = current[rel]
    return uploaded


class ContinuousUploader:
    """Uploads files that stopped changing while the container runs; a last pass at stop()."""

    def __init__(self, client: Any, root: str, bucket: str, prefix: str, interval: float = 2.0) -> None:
        self.client = client
        self.root = root
        self.bucket = bucket
        self.prefix = prefix
        self.interval = interval
        self.uploaded: Dict[str, Tuple[int, int]] = {}
        self.errors: List[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="continuous-upload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        previous: Dict[str, Tuple[int, int]] = {}
        while not self._stop.wait(self.interval):
            current = _scan(self.root)
            stable = sorted(
                rel for rel, sig in current.items() if previous.get(rel) == sig and self.uploaded.get(rel) != sig
            )
            try:
                _upload(self.client, self.root, self.bucket, self.prefix, stable, 4)
            except S3TransferError as exc:
                self.errors.append(str(exc))
            else:
                for rel in stable:
                    self.uploaded[rel] = current[rel]
            previous = current

    def stop(self) -> Dict[str, Tuple[int, int]]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.uploaded = upload_tree(self.client, self.root, self.bucket, self.prefix, already=self.uploaded)
        return self.uploaded
