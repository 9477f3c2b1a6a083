#!/usr/bin/env bash
# Runs every check that needs no cluster: formatting, vet, golangci-lint,
# module tidiness and generated code.
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

echo ">>> gofmt"
unformatted="$(gofmt -l $(git ls-files '*.go' | grep -v '^hack/tools/'))"
if [[ -n "${unformatted}" ]]; then
  echo "These files need gofmt:" >&2
  echo "${unformatted}" >&2
  exit 1
fi

echo ">>> go vet"
go vet ./...
# The harness of make bench is a module of its own (hack/bench/go.mod), which
# the project's ./... does not reach; nor does it reach the end-to-end tests,
# which build only with their tag, or hack/image, another module.
(cd hack/bench && go vet ./...)
go vet -tags e2e ./test/e2e/...
(cd hack/image && go vet ./...)

hack/lint.sh

echo ">>> go mod tidy"
for dir in . hack/bench hack/tools/controlplane hack/tools/etcd hack/tools/containerd hack/image; do
  (
    cd "${dir}"
    cp go.mod /tmp/verify-go.mod.$$ && cp go.sum /tmp/verify-go.sum.$$
    go mod tidy
    if ! diff -q go.mod /tmp/verify-go.mod.$$ >/dev/null || ! diff -q go.sum /tmp/verify-go.sum.$$ >/dev/null; then
      cp /tmp/verify-go.mod.$$ go.mod && cp /tmp/verify-go.sum.$$ go.sum
      rm -f /tmp/verify-go.mod.$$ /tmp/verify-go.sum.$$
      echo "go.mod or go.sum in ${dir} is not tidy: run go mod tidy there" >&2
      exit 1
    fi
    rm -f /tmp/verify-go.mod.$$ /tmp/verify-go.sum.$$
  )
done

echo ">>> generated code"
hack/verify-codegen.sh

echo ">>> vendored web libraries"
hack/verify-web.sh
