#!/usr/bin/env bash
# stripe-node for sdktest.TestStripeNode: npm ci from the committed
# package-lock.json in sdktest/node (node_modules is not committed).
# Idempotent: skips npm when node_modules matches the lock file.
set -euo pipefail
cd "$(dirname "$0")/../../sdktest/node"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node and npm are required (Node.js 20 or later)" >&2
  exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "Node.js $(node --version) is too old: stripe-node needs 20 or later" >&2
  exit 1
fi
if [ -f node_modules/.package-lock.json ] && cmp -s <(node -p 'JSON.stringify(require("./package-lock.json").packages["node_modules/stripe"])') \
     <(node -p 'JSON.stringify((require("./node_modules/.package-lock.json").packages||{})["node_modules/stripe"])'); then
  echo "stripe-node already installed in sdktest/node"
  exit 0
fi
npm ci --no-audit --no-fund
