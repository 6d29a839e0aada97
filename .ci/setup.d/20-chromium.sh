#!/usr/bin/env bash
# Debian's chromium for the dashboard's browser tests (ui/browser_test.go,
# driven from go test by chromedp over the DevTools protocol: no Node, no
# driver, no browser download). Idempotent: does nothing when it is there.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get: install Chromium and set KEYBRAKE_CHROMIUM to its path" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# fonts-dejavu-core: a font for the pages' text in a bare image.
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
