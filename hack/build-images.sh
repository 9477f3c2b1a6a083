#!/usr/bin/env bash
# Builds container image archives without a container engine, with
# go-containerregistry (hack/image), into _output/images (or $1):
#
#   share.tar   kubeopencode/share:dev, the servers' image: the files,
#               user and entrypoint of the Dockerfile (both servers, CA
#               certificates, 65532:65532, /aggregated-apiserver)
#   agent.tar   kubeopencode/agent-busybox:test, an Agent image whose shell
#               is Debian's busybox-static with a link for each applet
#   pause.tar   kubeopencode/pause:test, the real test node's sandbox image
#
# Each archive has the format of `docker save`: `docker load` and
# containerd's `ctr images import` read it. The real test node imports them
# (internal/testenv); `make image` builds the same servers' image with Docker.
#
# Environment: VERSION (the servers' version, default v0.0.0-dev), IMAGE
# (default kubeopencode/share:dev), BUSYBOX (default /bin/busybox).
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-${ROOT}/_output/images}"
VERSION="${VERSION:-v0.0.0-dev}"
IMAGE="${IMAGE:-kubeopencode/share:dev}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"

mkdir -p "${OUT}/share" "${OUT}/pause"
builder="${OUT}/image-builder"
(cd "${ROOT}/hack/image" && go build -o "${builder}" . && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "${OUT}/pause/pause" ./pause)

# As the Dockerfile builds them.
(cd "${ROOT}" && CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=${VERSION}" \
  -o "${OUT}/share/" ./cmd/aggregated-apiserver ./cmd/controller)
"${builder}" -tag "${IMAGE}" -o "${OUT}/share.tar" \
  -add /etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt \
  -add /aggregated-apiserver="${OUT}/share/aggregated-apiserver" \
  -add /controller="${OUT}/share/controller" \
  -user 65532:65532 -entrypoint /aggregated-apiserver

# ldd fails on a static binary, and says so.
if [[ ! -x "${BUSYBOX}" ]] || [[ "$(ldd "${BUSYBOX}" 2>&1 || true)" != *'not a dynamic executable'* ]]; then
  echo "A static busybox is needed at ${BUSYBOX} (Debian's busybox-static; set BUSYBOX)" >&2
  exit 1
fi
"${builder}" -tag kubeopencode/agent-busybox:test -o "${OUT}/agent.tar" -busybox "${BUSYBOX}" -cmd sh

"${builder}" -tag kubeopencode/pause:test -o "${OUT}/pause.tar" \
  -add /pause="${OUT}/pause/pause" -user 65535:65535 -entrypoint /pause

echo ">>> image archives in ${OUT}: share.tar agent.tar pause.tar"
