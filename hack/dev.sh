#!/usr/bin/env bash
# Runs the whole system on a local control plane and prints a share link.
# Ctrl-C stops everything. State, builds and logs live in _output/dev.
set -o errexit -o nounset -o pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
"${ROOT}/hack/build-control-plane.sh"
exec go run ./hack/dev "$@"
