#!/usr/bin/env bash
# Runs golangci-lint (configuration: .golangci.yaml) over the main module and
# the modules of the bench harness and the image builder. The linter is a
# pinned version installed from the Go module proxy into _output/tools on
# first use, so a fresh machine needs nothing but Go.
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

GOLANGCI_LINT_VERSION="v2.15.0"
TOOLS="${ROOT}/_output/tools"
lint="${TOOLS}/golangci-lint-${GOLANGCI_LINT_VERSION}"
if [[ ! -x "${lint}" ]]; then
  echo ">>> installing golangci-lint ${GOLANGCI_LINT_VERSION} into ${TOOLS}"
  mkdir -p "${TOOLS}/bin"
  GOBIN="${TOOLS}/bin" go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@${GOLANGCI_LINT_VERSION}"
  mv "${TOOLS}/bin/golangci-lint" "${lint}"
fi

echo ">>> golangci-lint"
"${lint}" run --config "${ROOT}/.golangci.yaml" ./...
for module in hack/bench hack/image; do
  (cd "${module}" && "${lint}" run --config "${ROOT}/.golangci.yaml" ./...)
done
