#!/usr/bin/env bash
# `npm run bench:compare` — run the loopback peer benchmark (gRPC-js, @effect/rpc, raw TLS/WSS/QUIC floors and alknet
# in one run) against this checkout. The harness is a separate project: point PEER_BENCH_DIR at a copy of it. It is
# copied to a temp dir (its install writes there), installed with `npm ci`, and run with ALKNET_ROOT set to this
# checkout. Extra arguments go to the harness (e.g. `--only alknet-wss,effect-rpc-tls-ndjson --repeat 3`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PEER_BENCH_DIR:-}" ] || [ ! -f "${PEER_BENCH_DIR}/package.json" ]; then
  echo "bench:compare: set PEER_BENCH_DIR to the peer benchmark harness (a directory with its package.json)" >&2
  exit 2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$PEER_BENCH_DIR/." "$work/"
(cd "$work" && npm ci --no-audit --no-fund >/dev/null)
# raw-quic-alknet (bench/peer-quic.ts) is the QUIC floor on this project's own QUIC layer; the harness's raw-quic and
# raw-quic-stock run @matrixai/quic's JavaScript layer, which alknet does not use (ask for them with --only).
only="ws-tls,grpc-tls,effect-rpc-tls-ndjson,alknet-wss,alknet-quic,raw-quic-alknet"
if [ "$#" -eq 0 ]; then set -- --only "$only" --phase-timeout 300; fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cd "$work"
ALKNET_ROOT="$root" npm run --silent bench -- --module alknet/alknet.ts --module "$root/bench/peer-quic.ts" "$@"
