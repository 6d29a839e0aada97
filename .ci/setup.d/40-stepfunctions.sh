#!/usr/bin/env bash
# Installs the npm packages the Step Functions integration tests run:
# aws-local-stepfunctions (executes the state machine definitions) and
# asl-validator (validates them), pinned by integrations/stepfunctions/local/
# package-lock.json. Idempotent: npm ci runs only when node_modules is missing
# or older than the lock file.
set -euo pipefail
cd "$(dirname "$0")/../../integrations/stepfunctions/local"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node and npm are required (Node.js 20+): installing from Debian" >&2
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "no apt-get: install Node.js 20+ and npm" >&2
    exit 1
  fi
fi

stamp=node_modules/.keybrake-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
  && [ -f node_modules/aws-local-stepfunctions/package.json ] \
  && [ -f node_modules/asl-validator/package.json ]; then
  echo "stepfunctions npm packages already installed"
  exit 0
fi
# aws-local-stepfunctions 3.x declares node >= 22; run-execution.mjs
# polyfills the one missing API (Promise.withResolvers) on Node 20.
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
echo "stepfunctions npm packages installed: $(node -e 'console.log(require("./node_modules/aws-local-stepfunctions/package.json").version)') aws-local-stepfunctions, $(node -e 'console.log(require("./node_modules/asl-validator/package.json").version)') asl-validator"
