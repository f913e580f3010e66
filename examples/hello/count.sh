#!/bin/sh
# Counts the words of every input file; runs inside the container.
set -eu
host=$(hostname)
out=/opt/ml/processing/output/counts
n=0
for f in /opt/ml/processing/input/text/*; do
  echo "$(wc -w < "$f") words in $(basename "$f")"
  n=$((n + 1))
done | tee "$out/counts-$host.txt"
n=$(wc -l < "$out/counts-$host.txt")
echo "config: $(cat /opt/ml/config/resourceconfig.json)"
echo "$GREETING from $host: counted $n files" > /opt/ml/output/message
