#!/usr/bin/env bash
# Builds the local control plane from Go modules into _output/bin:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl.
# With --node, also the real test node's programs (internal/testenv's
# RealNode): kubelet and kube-proxy from the same Kubernetes modules, and
# containerd, its runc shim and ctr from containerd's module
# (hack/tools/containerd). runc and the CNI plugins come from Debian's
# packages, which .ci/run installs.
# A binary that is already there and newer than its module files is reused.
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CONTROL_PLANE_BIN:-${ROOT}/_output/bin}"
KUBE_VERSION="v1.37.2"
mkdir -p "${BIN}"

version_ldflags() {
  local flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${KUBE_VERSION}"
    flags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=37"
    flags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  done
  echo "${flags}"
}

# fresh reports whether $1 exists and is newer than the module files in $2.
fresh() {
  [[ -x "$1" && "$1" -nt "$2/go.mod" && "$1" -nt "$2/go.sum" ]]
}

build() {
  local name="$1" module="$2" pkg="$3"
  if fresh "${BIN}/${name}" "${module}"; then
    echo ">>> ${name}: up to date"
    return
  fi
  echo ">>> building ${name} (a cold build takes minutes)"
  local start=${SECONDS}
  (cd "${module}" && CGO_ENABLED=0 go build -trimpath -ldflags "$(version_ldflags)" -o "${BIN}/${name}.tmp" "${pkg}")
  mv "${BIN}/${name}.tmp" "${BIN}/${name}"
  echo ">>> ${name}: built in $((SECONDS - start))s"
}

build etcd "${ROOT}/hack/tools/etcd" .
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  build "${cmd}" "${ROOT}/hack/tools/controlplane" "k8s.io/kubernetes/cmd/${cmd}"
done

if [[ "${1:-}" == "--node" ]]; then
  for cmd in kubelet kube-proxy; do
    build "${cmd}" "${ROOT}/hack/tools/controlplane" "k8s.io/kubernetes/cmd/${cmd}"
  done
  for cmd in containerd containerd-shim-runc-v2 ctr; do
    build "${cmd}" "${ROOT}/hack/tools/containerd" "github.com/containerd/containerd/v2/cmd/${cmd}"
  done
fi
