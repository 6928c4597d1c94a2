#!/bin/sh
# A k6-operator runner's `k6`: starts the runner's own Toxiproxy (fronting WAKESTORM_SERVER) and device engine beside
# k6, aims the devices at them, gives this runner its own results folder, then runs the real k6 with the operator's
# arguments (`k6 run --execution-segment … archive.tar --address … --paused --tag instance_id=N …`). The sidecars
# are children of this script and stop with it. Locally the same script runs with WAKESTORM_BIN and a results root.
set -eu
BIN=${WAKESTORM_BIN:-/opt/wakestorm/bin}
[ "${1:-}" = run ] || exec "$BIN/k6" "$@"
: "${WAKESTORM_SERVER:?set WAKESTORM_SERVER to the server under test as host:port}"
RESULTS=${WAKESTORM_RESULTS:-/results}
API=${WAKESTORM_TOXIPROXY_PORT:-8474}
PROXY=${WAKESTORM_PROXY_PORT:-18000}
ENGINE=${WAKESTORM_ENGINE_PORT:-7070}
instance=0
for a in "$@"; do
  case "$a" in instance_id=*) instance=${a#instance_id=} ;; esac
done
dir="$RESULTS/instance-$instance"
mkdir -p "$dir"
"$BIN/toxiproxy-server" -host 127.0.0.1 -port "$API" >"$dir/toxiproxy.log" 2>&1 &
toxi=$!
"$BIN/wakestorm-engine" --listen "127.0.0.1:$ENGINE" >"$dir/engine.log" 2>&1 &
engine=$!
trap 'kill "$toxi" "$engine" 2>/dev/null || true' EXIT
i=0
until "$BIN/toxiproxy-cli" -h "127.0.0.1:$API" list >/dev/null 2>&1; do
  i=$((i + 1))
  [ "$i" -lt 100 ] || { echo "wakestorm runner: Toxiproxy did not start (see $dir/toxiproxy.log)" >&2; exit 1; }
  sleep 0.1
done
"$BIN/toxiproxy-cli" -h "127.0.0.1:$API" create -l "127.0.0.1:$PROXY" -u "$WAKESTORM_SERVER" voice >/dev/null
i=0
until grep -q listening "$dir/engine.log" 2>/dev/null; do
  i=$((i + 1))
  [ "$i" -lt 100 ] || { echo "wakestorm runner: the device engine did not start (see $dir/engine.log)" >&2; exit 1; }
  sleep 0.1
done
shift
# A token arrives as a file (a mounted Secret): k6 reads it, it is never on a command line or in the archive.
if [ -n "${WAKESTORM_TOKEN_FILE:-}" ]; then set -- "$@" -e "TOKEN_FILE=$WAKESTORM_TOKEN_FILE"; fi
# k6's output goes to the pod's log and to k6.log, where `wakestorm merge` reads which faults this runner applied.
pipe="$dir/.k6-output"
rm -f "$pipe"
mkfifo "$pipe"
tee "$dir/k6.log" <"$pipe" &
teep=$!
trap 'kill "$toxi" "$engine" 2>/dev/null || true; rm -f "$pipe"' EXIT
# WAKESTORM_K6_GOGC (the TestRun's, from scripts/k6.ts k6GcEnv): k6's collector, set for k6 alone.
env ${WAKESTORM_K6_GOGC:+GOGC=$WAKESTORM_K6_GOGC} "$BIN/k6" run "$@" \
  -e "TARGET_URL=ws://127.0.0.1:$PROXY" -e "TOXIPROXY_URL=http://127.0.0.1:$API" \
  -e "ENGINE_URL=ws://127.0.0.1:$ENGINE/control" -e "RESULTS_DIR=$dir" -e VERDICT=cli -e SUMMARY_TABLE=off \
  --out "json=$dir/samples.json.gz" >"$pipe" 2>&1 &
k6=$!
# The pod's SIGTERM (or Ctrl-C locally) goes to k6, which stops gracefully and still writes its summary.
trap 'kill -INT "$k6" 2>/dev/null || true' INT TERM
set +e
wait "$k6"
code=$?
while kill -0 "$k6" 2>/dev/null; do
  wait "$k6"
  code=$?
done
wait "$teep"
# With no shared results claim, the pod stays up a while for `kubectl cp` of this runner's folder
# (docs/distributed.md); SIGTERM ends the wait at once.
if [ "${WAKESTORM_HOLD_S:-0}" -gt 0 ]; then
  echo "wakestorm runner: results in $dir; copy them out within ${WAKESTORM_HOLD_S} s (kubectl cp)" >&2
  trap 'exit "$code"' INT TERM
  sleep "$WAKESTORM_HOLD_S" &
  wait $! || true
fi
exit "$code"
