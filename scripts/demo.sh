#!/usr/bin/env bash
# The embedded default, end to end, on a fresh Debian/Ubuntu machine (as root):
# one local host (inventory/local.yaml), the local Docker daemon, file:// data.
# It installs what is missing, builds a tiny image locally (no registry
# needed), writes sample data and runs examples/hello/job.json. With
# DOCKER_HOST set it uses that daemon and starts none (scripts/docker-ready.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v busybox >/dev/null || need_apt+=(busybox-static)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# A Docker daemon: DOCKER_HOST's if set (distproc's local host uses it too),
# else the one that answers here, else one it installs and starts.
scripts/docker-ready.sh

# distproc and its runtime dependencies, exactly as uv.lock pins them.
# --inexact: a .venv that also has the dev extras (.ci/run) keeps them.
. scripts/uv.sh
"$UV" sync --locked --inexact --quiet

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
