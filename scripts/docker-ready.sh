#!/usr/bin/env bash
# Makes `docker info` answer, for scripts/demo.sh (Debian/Ubuntu, as root).
# The daemon it finds or starts is the one distproc's local host uses too:
# `ansible_connection: local` passes this environment (DOCKER_HOST included)
# to the docker CLI that the host agent runs.
#
#   DOCKER_HOST set       that daemon must answer; nothing is installed or
#                         started, since the user chose where Docker is.
#   a daemon answers      nothing to do (whether or not dockerd is here).
#   otherwise             docker.io is installed if the docker CLI or dockerd
#                         is missing (a CLI alone cannot start a daemon), then
#                         the system's docker service is started, or failing
#                         that a dockerd of our own, logging to
#                         $DISTPROC_DEMO_DOCKERD_LOG.
#
# Exit status 0 once `docker info` answers; else a message on stderr and 1.
set -euo pipefail

log=${DISTPROC_DEMO_DOCKERD_LOG:-/var/log/distproc-demo-dockerd.log}
# About 30 s for a fresh dockerd (and its containerd) to answer.
tries=150

say() { echo "docker-ready: $*"; }
die() { echo "docker-ready: $*" >&2; exit 1; }
answers() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }
# Docker's own last words, for a message (bounded).
why() { docker info 2>&1 >/dev/null | tail -n 2 | tr '\n' ' ' | cut -c1-400; }

if [ -n "${DOCKER_HOST:-}" ]; then
  command -v docker >/dev/null ||
    die "DOCKER_HOST is set ($DOCKER_HOST) but there is no docker CLI on PATH; install one (e.g. apt-get install docker.io)"
  answers && exit 0
  die "DOCKER_HOST=$DOCKER_HOST does not answer: $(why)
Start that daemon, or unset DOCKER_HOST to use (or start) this machine's own."
fi

answers && exit 0

if ! command -v docker >/dev/null || ! command -v dockerd >/dev/null; then
  say "no Docker daemon here: installing docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io
  command -v dockerd >/dev/null || die "docker.io is installed but dockerd is still not on PATH ($PATH)"
  # On a systemd machine the package starts its service.
  answers && exit 0
fi

if command -v systemctl >/dev/null && systemctl start docker >/dev/null 2>&1 && answers; then
  exit 0
fi

say "starting dockerd (log: $log)"
# Containers use the host network, so dockerd needs no bridge of its own.
# setsid: it outlives this script, in a session of its own.
setsid dockerd --bridge=none --iptables=false >"$log" 2>&1 </dev/null &
pid=$!
for ((i = 0; i < tries; i++)); do
  if answers; then
    say "dockerd is ready (pid $pid, log: $log)"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    die "dockerd exited before it answered; the end of $log:
$(tail -n 5 "$log")"
  fi
  sleep 0.2
done
die "dockerd (pid $pid) did not answer within 30 s: $(why)
See $log"
