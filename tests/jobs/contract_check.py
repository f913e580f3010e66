"""Runs inside each container of the 3-host contract test.

Records what the container sees (config files, environment, hostname, name
resolution) and does a TCP rendezvous: every host connects to algo-1, which
collects their names. Writes one JSON report per host to the output folder
and a short line to /opt/ml/output/message.
"""

import json
import os
import socket
import sys
import time

PORT = 47123
OUT = "/opt/ml/processing/output/report"


def resolve(name, deadline):
    # Containers are told to retry name resolution; so do we.
    while True:
        try:
            return socket.gethostbyname(name)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def rendezvous(me, hosts, deadline):
    if me == "algo-1":
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", PORT))
        server.listen(len(hosts))
        server.settimeout(max(1.0, deadline - time.time()))
        peers = []
        while len(peers) < len(hosts) - 1:
            conn, _ = server.accept()
            with conn:
                peers.append(conn.recv(64).decode())
                conn.sendall(b"ok")
        return sorted(peers)
    while True:
        try:
            with socket.create_connection(("algo-1", PORT), timeout=2) as conn:
                conn.sendall(me.encode())
                return [conn.recv(8).decode()]
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def main():
    deadline = time.time() + 60
    with open("/opt/ml/config/resourceconfig.json") as fh:
        resource = json.load(fh)
    with open("/opt/ml/config/processingjobconfig.json") as fh:
        job = json.load(fh)
    me = resource["current_host"]
    inputs = {}
    for root, _, files in os.walk("/opt/ml/processing/input"):
        for name in files:
            inputs[os.path.relpath(os.path.join(root, name), "/opt/ml/processing/input")] = True
    report = {
        "resource": resource,
        "job": job,
        "env": {k: v for k, v in os.environ.items() if k.startswith("T_")},
        "hostname": socket.gethostname(),
        "resolved": {h: resolve(h, deadline) for h in resource["hosts"]},
        "inputs": sorted(inputs),
        "paths_exist": {p: os.path.isdir(p) for p in sys.argv[1:]},
        "rendezvous": rendezvous(me, resource["hosts"], deadline),
    }
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, me + ".json"), "w") as fh:
        json.dump(report, fh)
    with open("/opt/ml/output/message", "w") as fh:
        fh.write("[" + me + " ok]")


main()
