"""Count words in this host's shard of the input; algo-1 gathers every host's counts over TCP.

Runs in the container on every host of the job (standard library only, any
python3 >= 3.10). The input is sharded (ShardedByS3Key), so each host sees only
its own files under /opt/ml/processing/input/text. Then:

- algo-K (K > 1) connects to algo-1 (the name resolves in every container;
  hosts share their host's network), retrying until algo-1 listens, sends
  its partial counts as one JSON document, and waits for algo-1's "ok";
- algo-1 listens on its own address, receives the N-1 partials, merges them
  with its own and writes /opt/ml/processing/output/combined/word_counts.json.

Every host also writes its partial to /opt/ml/processing/output/partials/
(one file per host, named after it) and a line to /opt/ml/output/message.

Arguments: --port (default 7077), --timeout seconds for the whole exchange (default 300).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import socket
import time

CONFIG = "/opt/ml/config/resourceconfig.json"
INPUT = "/opt/ml/processing/input/text"
COMBINED = "/opt/ml/processing/output/combined"
PARTIALS = "/opt/ml/processing/output/partials"
MESSAGE = "/opt/ml/output/message"
WORD = re.compile(r"[a-z0-9']+")


def log(text: str) -> None:
    print(text, flush=True)


def count_shard(folder: str) -> dict:
    """Word counts over every file below ``folder`` (this host's shard)."""
    counts: collections.Counter[str] = collections.Counter()
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            files.append(os.path.relpath(path, folder))
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    counts.update(WORD.findall(line.lower()))
    return {"files": files, "words": sum(counts.values()), "counts": dict(counts)}


def receive_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def gather(me: str, hosts: list[str], port: int, deadline: float) -> dict[str, dict]:
    """algo-1: accept one partial from every other host; returns them by host name."""
    address = socket.gethostbyname(me)  # this host's address as the others reach it
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen(len(hosts))
    log(f"{me} listening on {address}:{port} for {len(hosts) - 1} partials")
    partials: dict[str, dict] = {}
    with server:
        while len(partials) < len(hosts) - 1:
            server.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                conn, peer = server.accept()
            except TimeoutError:
                missing = sorted(set(hosts) - {me} - set(partials))
                raise SystemExit(f"{me}: timed out waiting for partials from {', '.join(missing)}") from None
            with conn:
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                partial = json.loads(receive_all(conn))
                sender = partial["host"]
                if sender not in hosts or sender == me or sender in partials:
                    raise SystemExit(f"{me}: unexpected partial from {sender!r} at {peer[0]}")
                partials[sender] = partial
                conn.sendall(b"ok\n")
            words, files = partial["words"], len(partial["files"])
            log(f"{me} received {sender}'s partial from {peer[0]}: {words} words in {files} files")
    return partials


def send(me: str, leader: str, port: int, partial: dict, deadline: float) -> None:
    """algo-K: send the partial to algo-1, retrying until it listens; wait for its acknowledgement."""
    payload = json.dumps(partial).encode()
    attempt = 0
    while True:
        attempt += 1
        try:
            conn = socket.create_connection((leader, port), timeout=max(0.1, deadline - time.monotonic()))
        except OSError as exc:  # refused (not listening yet), unreachable, name not resolved yet...
            if time.monotonic() > deadline:
                raise SystemExit(f"{me}: could not reach {leader}:{port} after {attempt} attempts: {exc}") from None
            time.sleep(min(1.0, 0.05 * attempt))
            continue
        with conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            reply = receive_all(conn)
        if reply != b"ok\n":
            raise SystemExit(f"{me}: {leader} did not acknowledge the partial (got {reply!r})")
        log(f"{me} sent {partial['words']} words to {leader}:{port} (attempt {attempt})")
        return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=7077)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout

    with open(CONFIG) as fh:
        config = json.load(fh)
    me, hosts = config["current_host"], config["hosts"]
    leader = hosts[0]  # algo-1: distproc lists the hosts in algo order

    partial = {"host": me, **count_shard(INPUT)}
    log(f"{me} counted {partial['words']} words in {len(partial['files'])} files")
    os.makedirs(PARTIALS, exist_ok=True)
    with open(os.path.join(PARTIALS, f"{me}.json"), "w") as fh:
        json.dump(partial, fh, sort_keys=True)

    if me != leader:
        send(me, leader, args.port, partial, deadline)
        with open(MESSAGE, "w") as fh:
            fh.write(f"{me}: sent {partial['words']} words to {leader}\n")  # ExitMessage joins the hosts' messages
        return

    partials = gather(me, hosts, args.port, deadline)
    partials[me] = partial
    total: collections.Counter[str] = collections.Counter()
    for p in partials.values():
        total.update(p["counts"])
    combined = {
        "hosts": {h: {"files": len(partials[h]["files"]), "words": partials[h]["words"]} for h in hosts},
        "files": sum(len(p["files"]) for p in partials.values()),
        "words": sum(total.values()),
        "distinct_words": len(total),
        "counts": dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
    os.makedirs(COMBINED, exist_ok=True)
    with open(os.path.join(COMBINED, "word_counts.json"), "w") as fh:
        json.dump(combined, fh, indent=1)
    top = ", ".join(f"{w} {n}" for w, n in list(combined["counts"].items())[:5])
    words, distinct = combined["words"], combined["distinct_words"]
    log(f"{me} combined {len(hosts)} hosts: {words} words, {distinct} distinct; top: {top}")
    with open(MESSAGE, "w") as fh:
        fh.write(f"{me}: combined {len(hosts)} hosts, {combined['files']} files, {combined['words']} words\n")


if __name__ == "__main__":
    main()
