#!/usr/bin/env bash
# Runs the whole system on a local control plane and prints a share link.
# Ctrl-C, or SIGINT or SIGTERM to this process or to the make that started
# it, stops everything. State, builds and logs live in _output/dev.
# hack/dev builds the control plane (hack/build-control-plane.sh) itself,
# and the real node's programs too when it uses one (--node): it alone
# decides which node, so a machine that cannot run a real node never
# builds one.
set -o errexit -o nounset -o pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
mkdir -p "${ROOT}/_output/bin"
go build -o "${ROOT}/_output/bin/dev" ./hack/dev
# exec, not go run: the signals a supervisor sends reach the program that
# stops the control plane, and its exit status is make's.
exec "${ROOT}/_output/bin/dev" "$@"
