#!/usr/bin/env bash
# Idle floors, 10,000 devices each, one after the other against one reference server (direct):
#   bash prototypes/measure.sh [go] [nbio] [rust]   (default: all three)
set -u
ulimit -n 20000
cd "$(dirname "$0")/.."
PORT=18321
npx wakestorm server --port $PORT > /tmp/floor-server.log 2>&1 &
SP=$!
sleep 4
HZ=$(getconf CLK_TCK)
want=${*:-go nbio rust}
for c in "go:prototypes/go-floor/go-floor:80s" "nbio:prototypes/go-nbio-floor/go-nbio-floor:80s" \
  "rust:prototypes/rust-floor/target/release/rust-floor:80"; do
  name=${c%%:*}; rest=${c#*:}; bin=${rest%%:*}; hold=${rest#*:}
  case " $want " in *" $name "*) ;; *) continue ;; esac
  $bin ws://127.0.0.1:$PORT 10000 $hold > /tmp/floor-$name.log 2>&1 &
  P=$!
  for i in $(seq 1 120); do grep -q connected /tmp/floor-$name.log && break; sleep 1; done
  sleep 5
  t0=$(awk '{print $14+$15}' /proc/$P/stat)
  sleep 30
  t1=$(awk '{print $14+$15}' /proc/$P/stat)
  rss=$(awk '/VmRSS/{print $2}' /proc/$P/status)
  echo "$name: $(grep connected /tmp/floor-$name.log) rss ${rss} kB = $(echo "scale=1; $rss/10000" | bc) KiB/device, cpu $(echo "scale=1; ($t1-$t0)*100/$HZ/30" | bc)% of a core"
  kill $P; wait $P 2>/dev/null
  sleep 3
done
kill $SP; wait $SP 2>/dev/null
