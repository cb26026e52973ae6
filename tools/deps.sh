#!/usr/bin/env bash
# Installs everything moonroom builds, runs and tests with, from Debian 12's
# packages (run as root). Safe to run again: apt skips what is there.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(
  build-essential cmake pkg-config git
  clang-format          # the format check in tools/test.sh
  libuv1-dev            # the event loop
  libwslay-dev          # WebSocket frame codec
  libluajit-5.1-dev luajit  # handler scripts; luajit compiles lua/ at build time
  libssl-dev            # TLS; SHA-1/base64 for the handshake, HMAC-SHA256 for the cluster
  openssl               # the TLS tests make throw-away certificates with it
  libhttp-parser-dev    # HTTP request head parser
  uthash-dev            # hash tables for rooms and connection ids
  libhiredis-dev        # the Redis engine (--engine redis://), with its libuv adapter
  redis-server          # the Redis engine's tests start their own on a free port
  zlib1g-dev            # permessage-deflate (RFC 7692)
  lua-busted            # handler specs
  lua-cjson             # ws.json (the JSON library OpenResty ships)
  python3 python3-websockets python3-pytest  # integration tests' client
  python3-prometheus-client  # parses /metrics in the integration tests
  gnuplot-nox           # benchmark chart
  chromium fonts-dejavu-core  # the chat demo's browser test (tests/browser)
)
# Node.js and npm drive the benchmark's peer server and its smoke test; a
# machine that already has a node toolchain keeps it.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
need=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The browser test's driver, playwright-core from npm, pinned by its lock
# file; it drives Debian's chromium and never downloads a browser.
(cd "$(dirname "$0")/../tests/browser" &&
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
# The compression tests' second independent client, Node's ws, pinned by its
# lock file (tests/node; driven by tests/integration/test_compression_node.py).
(cd "$(dirname "$0")/../tests/node" &&
  npm ci --no-audit --no-fund --loglevel=error)
