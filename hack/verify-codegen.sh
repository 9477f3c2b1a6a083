#!/usr/bin/env bash
# Fails when the checked-in generated code differs from what
# hack/update-codegen.sh produces. It generates into a copy of the tree, so
# the working tree is left as it is.
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "${TMP}"' EXIT

tar -C "${ROOT}" --exclude=./_output --exclude=./.git --exclude='./hack/web/node_modules' -cf - . | tar -C "${TMP}" -xf -
"${TMP}/hack/update-codegen.sh" >/dev/null

status=0
for path in pkg/apis pkg/generated artifacts/crd; do
  if ! diff -Nru "${ROOT}/${path}" "${TMP}/${path}"; then
    status=1
  fi
done
if [[ ${status} -ne 0 ]]; then
  echo "Generated code is out of date. Run hack/update-codegen.sh." >&2
  exit 1
fi
echo "Generated code is up to date."
