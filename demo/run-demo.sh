#!/usr/bin/env bash
# The demo: a sample store's gateway with its cache filled, a register's visit, then some load.
set -euo pipefail
cd "$(dirname "$0")/.."
export EDGE_GATEWAY_CONFIG="$PWD/demo/gateway.toml"
GW=.venv/bin/edge-gateway
mkdir -p var/demo

echo "== Importing the sample store's members and coupons"
$GW import members gateway/sample/members.jsonl
$GW import coupons gateway/sample/coupons.jsonl

echo "== Starting the gateway (log: var/demo/gateway.log)"
$GW run > var/demo/gateway.log 2>&1 &
gateway_pid=$!
trap 'kill -TERM $gateway_pid 2>/dev/null || true; wait $gateway_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q gateway_ready var/demo/gateway.log 2>/dev/null && break
  kill -0 $gateway_pid 2>/dev/null || { cat var/demo/gateway.log; exit 1; }
  sleep 0.1
done

echo "== A customer at register 7: identify, coupon, posted check, a retransmission, consent"
$GW simulate

echo "== Ten registers posting checks for five seconds"
$GW simulate --registers 10 --duration 5

echo "== Stopping the gateway (SIGTERM: answers finish, the writer flushes)"
kill -TERM $gateway_pid
wait $gateway_pid
trap - EXIT
tail -n 3 var/demo/gateway.log
