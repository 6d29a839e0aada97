#!/usr/bin/env bash
# stripe-mock (Stripe's OpenAPI-driven mock) for sdktest.TestStripeGoStripeMock.
# Idempotent: does nothing when the pinned version is already installed.
set -euo pipefail
version=v0.203.0
bin="$(go env GOPATH)/bin/stripe-mock"
stamp="$(go env GOPATH)/bin/.stripe-mock-version"
if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
  echo "stripe-mock $version already installed"
  exit 0
fi
go install "github.com/stripe/stripe-mock@$version"
echo "$version" > "$stamp"
echo "installed stripe-mock $version at $bin"
