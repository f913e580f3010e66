#!/usr/bin/env bash
# The embedded default, end to end, on a fresh Debian/Ubuntu machine (as root):
# one local host (inventory/local.yaml), the local Docker daemon, file:// data.
# It installs what is missing, builds a tiny image locally (no registry
# needed), writes sample data and runs examples/hello/job.json.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v docker >/dev/null || need_apt+=(docker.io)
command -v busybox >/dev/null || need_apt+=(busybox-static)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# A Docker daemon: the system's if it answers, else start one.
if ! docker info >/dev/null 2>&1; then
  if command -v systemctl >/dev/null && systemctl start docker 2>/dev/null && docker info >/dev/null 2>&1; then
    :
  else
    echo "starting dockerd (log: /var/log/distproc-demo-dockerd.log)"
    # Containers use the host network, so dockerd needs no bridge of its own.
    setsid dockerd --bridge=none --iptables=false >/var/log/distproc-demo-dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/distproc-demo-dockerd.log" >&2; exit 1; }
  fi
fi

[ -x .venv/bin/distproc ] || { python3 -m venv .venv && .venv/bin/pip install -q -e .; }

# The demo image: a static busybox tree, imported (no registry is needed).
if ! docker image inspect distproc-demo:busybox >/dev/null 2>&1; then
  root=$(mktemp -d)
  mkdir -p "$root/bin"
  cp "$(command -v busybox)" "$root/bin/busybox"
  for applet in $(busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  # An imported image has no environment of its own: give it a PATH.
  tar -C "$root" -c . | docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - distproc-demo:busybox >/dev/null
  rm -rf "$root"
fi

mkdir -p /var/tmp/distproc-demo/input /var/tmp/distproc-demo/output /var/tmp/distproc-demo/code
cp examples/hello/count.sh /var/tmp/distproc-demo/code/
echo "the quick brown fox" > /var/tmp/distproc-demo/input/fox.txt
echo "jumps over the lazy dog twice over" > /var/tmp/distproc-demo/input/dog.txt

# Job names are unique, as in SageMaker: each demo run gets its own.
name="hello-$(date +%Y%m%d-%H%M%S)"
set -x
.venv/bin/distproc run --inventory inventory/local.yaml --job-name "$name" examples/hello/job.json
.venv/bin/distproc describe "$name"
cat /var/tmp/distproc-demo/output/counts-algo-1.txt
