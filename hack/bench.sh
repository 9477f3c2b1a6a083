#!/usr/bin/env bash
# Measures the share path against baselines taken in the same run and writes
# the table to docs/benchmarks.md (make bench). It builds the servers and the
# harness (hack/bench), installs WeTTY with npm for figure 7 when it can, runs
# the micro benchmarks, then starts a local control plane and runs every
# figure. Arguments go to the harness: for instance -only terminal, or
# -agents 1000 for a shorter run; see `_output/bench/bin/bench -help`.
#
# The control-plane binaries come from $KUBEOPENCODE_CONTROL_PLANE_BIN, else
# _output/bin; missing ones are built first (minutes, once).
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
OUT="${ROOT}/_output/bench"
WETTY_VERSION="3.2.0"
mkdir -p "${OUT}/bin"
# The harness keeps the whole of this script within its time budget.
t0="$(date +%s)"

echo ">>> building aggregated-apiserver, controller and the harness"
go build -o "${OUT}/bin/" ./cmd/aggregated-apiserver ./cmd/controller ./hack/bench

# WeTTY, the dedicated web terminal of figure 7, from npm into _output (never
# into the repository). Its node-pty is a native module: if npm cannot build
# it for this Node, the harness finds out and says so in the table's notes.
wetty_main="${OUT}/wetty/node_modules/wetty/build/main.js"
install_wetty() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || return 1
  echo ">>> installing WeTTY ${WETTY_VERSION} with npm into ${OUT}/wetty"
  mkdir -p "${OUT}/wetty"
  (
    cd "${OUT}/wetty"
    [[ -f package.json ]] || echo '{"name":"bench-peers","private":true}' > package.json
    timeout 300 npm install --no-audit --no-fund --loglevel=error "wetty@${WETTY_VERSION}"
  )
}
harness_args=()
if [[ -f "${wetty_main}" ]] || install_wetty; then
  harness_args+=(-wetty "${wetty_main}")
else
  echo ">>> WeTTY is not available (no node and npm, or its install failed): figure 7 compares with the in-process floor only"
fi

echo ">>> micro benchmarks: token resolution and the wire codec"
go test -run '^$' -bench . -benchmem -benchtime 200ms ./pkg/sharehttp/ ./pkg/sharehttp/access/ ./pkg/sharehttp/wire/ | tee "${OUT}/micro.txt"
harness_args+=(-micro "${OUT}/micro.txt" -t0 "${t0}")

exec "${OUT}/bin/bench" "${harness_args[@]}" "$@"
