#!/usr/bin/env bash
# Efficiency of the multi-machine search on loopback: a redis-server on a free local port, N
# `nasnet worker --queue` processes and a search of synthetic children (each sleeps MS ms, so the
# CPU is not the limit). Prints: workers, trials, ideal s, measured s, efficiency.
#   scripts/queue-bench.sh NASNET_BINARY "1 8 32 128" MS TRIALS_PER_WORKER
# Efficiency = ideal / measured, ideal = ceil(trials / workers) * MS. The search keeps 2 x N
# trials queued (--workers 2N) so a worker never waits for the search to propose. RUN_ROOT
# (default /tmp) holds the run folders and the Redis files: the search fsyncs ~15 times per trial.
set -euo pipefail
BIN=${1:?nasnet binary}
COUNTS=${2:-"1 8 32 128"}
MS=${3:-2000}
PER=${4:-4}
TMP=$(mktemp -d -p "${RUN_ROOT:-/tmp}")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$PORT" --save '' --appendonly yes --dir "$TMP" >"$TMP/redis.log" 2>&1 &
RPID=$!
cleanup() { kill $RPID 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
sleep 0.5
URL="redis://127.0.0.1:$PORT"
printf "%8s %7s %8s %10s %10s\n" workers trials ideal_s measured_s efficiency
for N in $COUNTS; do
    QUEUE="bench-$N"
    PIDS=()
    for _ in $(seq "$N"); do
        RAYON_NUM_THREADS=1 "$BIN" worker --queue "$URL" --queue-name "$QUEUE" 2>/dev/null &
        PIDS+=($!)
    done
    sleep 2  # every worker connected and waiting
    T=$((N * PER))
    START=$(date +%s.%N)
    "$BIN" search --queue "$URL" --queue-name "$QUEUE" --synthetic-child-ms "$MS" \
        --strategy random --trials "$T" --workers $((2 * N)) --quiet \
        --run-dir "$TMP/run-$N" >/dev/null 2>&1
    END=$(date +%s.%N)
    kill "${PIDS[@]}"
    wait "${PIDS[@]}" 2>/dev/null || true
    python3 -c "
t=$END-$START; ideal=-(-$T//$N)*$MS/1000
print('%8d %7d %8.2f %10.2f %10.3f' % ($N, $T, ideal, t, ideal/t))"
done
