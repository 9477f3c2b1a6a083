#!/usr/bin/env bash
# Copies the pinned browser libraries (hack/web/package-lock.json) into the
# share page's embedded assets. The copies are committed, so building the
# project needs no npm; hack/verify-web.sh checks they match the pins.
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WEB="${ROOT}/hack/web"
VENDOR="${VENDOR_DIR:-${ROOT}/pkg/sharehttp/web/static/vendor}"

(cd "${WEB}" && npm ci --no-audit --no-fund --ignore-scripts >/dev/null)
mkdir -p "${VENDOR}"
cp "${WEB}/node_modules/@xterm/xterm/lib/xterm.js" "${VENDOR}/xterm.js"
cp "${WEB}/node_modules/@xterm/xterm/css/xterm.css" "${VENDOR}/xterm.css"
cp "${WEB}/node_modules/@xterm/xterm/LICENSE" "${VENDOR}/xterm.LICENSE"
cp "${WEB}/node_modules/@xterm/addon-fit/lib/addon-fit.js" "${VENDOR}/addon-fit.js"
cp "${WEB}/node_modules/@xterm/addon-fit/LICENSE" "${VENDOR}/addon-fit.LICENSE"
# Source maps are not shipped; drop the comments that point at them.
sed -i '/^\/\/# sourceMappingURL=/d' "${VENDOR}/xterm.js" "${VENDOR}/addon-fit.js"
