#!/usr/bin/env bash
# Fails when the vendored browser libraries differ from the pinned packages.
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The pins are exact versions, so that npm ci and the copies are reproducible.
node -e '
const deps = require(process.argv[1]).dependencies || {};
const loose = Object.entries(deps).filter(([, v]) => !/^[0-9]+\.[0-9]+\.[0-9]+$/.test(v));
if (loose.length) {
  console.error("hack/web/package.json must pin exact versions (npm install --save-exact):", loose);
  process.exit(1);
}' "${ROOT}/hack/web/package.json"

TMP="$(mktemp -d)"
trap 'rm -rf "${TMP}"' EXIT

VENDOR_DIR="${TMP}" "${ROOT}/hack/update-web.sh"
if ! diff -r "${ROOT}/pkg/sharehttp/web/static/vendor" "${TMP}"; then
  echo "The vendored web libraries are out of date. Run hack/update-web.sh." >&2
  exit 1
fi
echo "Vendored web libraries match their pins."
