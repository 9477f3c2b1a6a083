#!/usr/bin/env bash
# Regenerates the generated code: deepcopy functions, the Agent CRD and the
# OpenAPI definitions of the aggregated API group. The generators are pinned
# by the tool block of go.mod.
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
MODULE="github.com/kubeopencode/share"
HEADER="hack/boilerplate.go.txt"

echo ">>> deepcopy"
go tool deepcopy-gen \
  --go-header-file "${HEADER}" \
  --output-file zz_generated.deepcopy.go \
  ./pkg/apis/kubeopencode/v1alpha1 ./pkg/apis/subresources/v1alpha1

echo ">>> openapi"
go tool openapi-gen \
  --go-header-file "${HEADER}" \
  --output-dir pkg/generated/openapi \
  --output-pkg "${MODULE}/pkg/generated/openapi" \
  --output-file zz_generated.openapi.go \
  --output-model-name-file zz_generated.model_name.go \
  --readonly-pkg k8s.io/apimachinery/pkg/apis/meta/v1 \
  --readonly-pkg k8s.io/apimachinery/pkg/runtime \
  --readonly-pkg k8s.io/apimachinery/pkg/version \
  --report-filename pkg/generated/openapi/violation_exceptions.list \
  k8s.io/apimachinery/pkg/apis/meta/v1 \
  k8s.io/apimachinery/pkg/runtime \
  k8s.io/apimachinery/pkg/version \
  ./pkg/apis/subresources/v1alpha1

echo ">>> crd"
rm -rf artifacts/crd
go tool controller-gen crd:crdVersions=v1 \
  paths=./pkg/apis/kubeopencode/... \
  output:crd:dir=artifacts/crd
