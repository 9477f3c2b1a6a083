#!/usr/bin/env bash
# Runs the whole system on a local control plane and prints a share link.
# Ctrl-C, or SIGINT or SIGTERM to this process or to the make that started
# it, stops everything. State, builds and logs live in _output/dev.
set -o errexit -o nounset -o pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
"${ROOT}/hack/build-control-plane.sh"
mkdir -p "${ROOT}/_output/bin"
go build -o "${ROOT}/_output/bin/dev" ./hack/dev
# exec, not go run: the signals a supervisor sends reach the program that
# stops the control plane, and its exit status is make's.
exec "${ROOT}/_output/bin/dev" "$@"
