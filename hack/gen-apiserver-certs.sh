#!/usr/bin/env bash
# Makes the aggregated API server's TLS without cert-manager: a private CA and
# a serving certificate signed by it (openssl), and a kustomization that
# installs artifacts/ with them:
#
#   hack/gen-apiserver-certs.sh [OUT_DIR]
#   kubectl apply -k OUT_DIR
#
# OUT_DIR (default _output/apiserver-certs, git-ignored) receives
#   ca.crt, ca.key          the CA; kept and reused by later runs, so that the
#                           APIService's caBundle does not change
#   tls.crt, tls.key        the serving certificate for
#                           kubeopencode-apiserver.kubeopencode-system.svc
#   secret.yaml             the Secret kubeopencode-apiserver-tls
#   apiservice-patch.yaml   spec.caBundle of the APIService: the CA, base64
#   kustomization.yaml      artifacts/base + the two above
#
# Run it again before the serving certificate expires (SERVING_DAYS, default
# 365) and apply again: the server reloads the renewed files from the Secret
# without a restart. Delete ca.* to start a new CA (the caBundle changes with
# it). The keys are secrets: keep OUT_DIR out of version control.
#
# Environment: CA_DAYS (default 3650), SERVING_DAYS (default 365), OPENSSL.
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
OUT="${1:-${ROOT}/_output/apiserver-certs}"
CA_DAYS="${CA_DAYS:-3650}"
SERVING_DAYS="${SERVING_DAYS:-365}"
OPENSSL="${OPENSSL:-openssl}"

NAMESPACE=kubeopencode-system
SERVICE=kubeopencode-apiserver
SECRET=kubeopencode-apiserver-tls
APISERVICE=v1alpha1.subresources.kubeopencode.io

if ! command -v "${OPENSSL}" >/dev/null 2>&1; then
  echo "openssl is needed (set OPENSSL to its path)" >&2
  exit 1
fi

umask 077
mkdir -p "${OUT}"
OUT="$(cd "${OUT}" && pwd -P)"
# Nothing in here belongs in version control, wherever OUT_DIR is.
printf '*\n' >"${OUT}/.gitignore"

# relpath FROM TO prints TO relative to the directory FROM (both absolute),
# for the kustomization's reference to artifacts/base.
relpath() {
  local from="$1/" to="$2" up=""
  while [[ "${to}/" != "${from}"* ]]; do
    from="$(dirname "${from%/}")"
    [[ "${from}" == / ]] || from="${from}/"
    up="../${up}"
  done
  local rest="${to#"${from}"}"
  rest="${rest#/}"
  printf '%s%s\n' "${up}" "${rest:-.}"
}

b64() { "${OPENSSL}" base64 -A -in "$1"; }

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

if [[ -s "${OUT}/ca.crt" && -s "${OUT}/ca.key" ]]; then
  echo "Reusing the CA in ${OUT}/ca.crt"
else
  echo "Making a CA"
  "${OPENSSL}" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "${OUT}/ca.key" 2>/dev/null
  "${OPENSSL}" req -x509 -new -key "${OUT}/ca.key" -sha256 -days "${CA_DAYS}" \
    -subj "/CN=${SERVICE}-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "${OUT}/ca.crt"
fi

echo "Making the serving certificate for ${SERVICE}.${NAMESPACE}.svc"
"${OPENSSL}" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "${tmp}/tls.key" 2>/dev/null
"${OPENSSL}" req -new -key "${tmp}/tls.key" -subj "/CN=${SERVICE}.${NAMESPACE}.svc" -out "${tmp}/tls.csr"
cat >"${tmp}/ext.cnf" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:${SERVICE}.${NAMESPACE}.svc, DNS:${SERVICE}.${NAMESPACE}.svc.cluster.local
EOF
"${OPENSSL}" x509 -req -in "${tmp}/tls.csr" -CA "${OUT}/ca.crt" -CAkey "${OUT}/ca.key" \
  -set_serial "0x$("${OPENSSL}" rand -hex 16)" -sha256 -days "${SERVING_DAYS}" \
  -extfile "${tmp}/ext.cnf" -out "${tmp}/tls.crt" 2>/dev/null
"${OPENSSL}" verify -CAfile "${OUT}/ca.crt" "${tmp}/tls.crt" >/dev/null
mv "${tmp}/tls.key" "${OUT}/tls.key"
mv "${tmp}/tls.crt" "${OUT}/tls.crt"

cat >"${OUT}/secret.yaml" <<EOF
# The aggregated API server's serving certificate, made by
# hack/gen-apiserver-certs.sh. Holds a private key: do not commit it.
apiVersion: v1
kind: Secret
metadata:
  name: ${SECRET}
  namespace: ${NAMESPACE}
  labels:
    app.kubernetes.io/name: ${SERVICE}
    app.kubernetes.io/part-of: kubeopencode
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "${OUT}/tls.crt")
  tls.key: $(b64 "${OUT}/tls.key")
  ca.crt: $(b64 "${OUT}/ca.crt")
EOF

cat >"${OUT}/apiservice-patch.yaml" <<EOF
# The CA that signed the serving certificate, made by
# hack/gen-apiserver-certs.sh.
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: ${APISERVICE}
spec:
  caBundle: $(b64 "${OUT}/ca.crt")
EOF

cat >"${OUT}/kustomization.yaml" <<EOF
# Made by hack/gen-apiserver-certs.sh: artifacts/ with a self-signed CA.
#   kubectl apply -k ${OUT}
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(relpath "${OUT}" "${ROOT}/artifacts/base")
  - secret.yaml
patches:
  - path: apiservice-patch.yaml
EOF

echo "Wrote ${OUT}. Install with:"
echo "  kubectl apply -k ${OUT}"
