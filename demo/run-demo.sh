#!/usr/bin/env bash
# The demo: a reference central, a store's gateway that fills its cache from it, a register's
# visit, load, and an outage of central that loses nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export EDGE_GATEWAY_CONFIG="$PWD/demo/gateway.toml"
GW=.venv/bin/edge-gateway
PY=.venv/bin/python
DB=var/demo/gateway.db
rm -rf var/demo && mkdir -p var/demo

pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_for() {  # wait_for FILE PATTERN PID
  for _ in $(seq 1 150); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { cat "$1"; exit 1; }
    sleep 0.1
  done
  echo "gave up waiting for $2 in $1"; exit 1
}

echo "== Starting the reference central on 127.0.0.1:18080 (sample members, coupons, rules)"
$PY -m sync.central --port 18080 --db var/demo/central.db --snapshot-every 60 \
  --rules gateway/sample/rules.json > var/demo/central.log 2>&1 &
pids+=($!)
wait_for var/demo/central.log "admin on" $!
ADMIN=$(grep -o 'http://[^ ]*/_admin/' var/demo/central.log)

echo "== Starting the gateway (log: var/demo/gateway.log); it takes a snapshot from central"
$GW run > var/demo/gateway.log 2>&1 &
pids+=($!)
wait_for var/demo/gateway.log gateway_ready $!
$PY demo/central_ctl.py wait-members $DB

echo "== Register 7: a GOLD member with a coupon, a retransmission, a lottery member's tickets,"
echo "   a birthday check re-posted after an outage, and lottery consent"
$GW simulate

echo "== Ten registers for five seconds"
$GW simulate --registers 10 --duration 5
$PY demo/central_ctl.py wait-drained $DB
$PY demo/central_ctl.py stats "$ADMIN"

echo "== Central goes away; the registers are still answered and every check is kept"
$PY demo/central_ctl.py down "$ADMIN" true
$GW simulate --registers 4 --duration 3
$PY demo/central_ctl.py outbox $DB

echo "== Central comes back; the gateway sends what it kept, once"
$PY demo/central_ctl.py down "$ADMIN" false
$PY demo/central_ctl.py wait-drained $DB
$PY demo/central_ctl.py stats "$ADMIN"

echo "== Stopping (SIGTERM: answers finish, the writer flushes)"
cleanup
trap - EXIT
grep -E "central_unreachable|central_recovered|gateway_stopped" var/demo/gateway.log | tail -n 4
