#!/usr/bin/env bash
# Runs each fuzz target for a short while (FUZZ_TIME, default 5s). The seed
# corpora also run as plain tests in `go test`; this explores beyond them.
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
FUZZ_TIME="${FUZZ_TIME:-5s}"

targets=(
  "./pkg/apis/kubeopencode/validation FuzzParseIPOrCIDR"
  "./pkg/share FuzzValidToken"
  "./pkg/apis/subresources/validation FuzzAgentShareCreate"
  "./pkg/sharehttp/wire FuzzDecode"
  "./pkg/sharehttp FuzzShareRoutes"
)
corpus_size() {
  if [[ -d "$1" ]]; then find "$1" -type f | wc -l; else echo 0; fi
}

fuzz() {
  go test "$1" -run '^$' -fuzz "^$2\$" -fuzztime "${FUZZ_TIME}" 2>&1 | grep -v '^fuzz: elapsed'
  return "${PIPESTATUS[0]}"
}

for target in "${targets[@]}"; do
  read -r pkg name <<<"${target}"
  echo ">>> fuzzing ${name} in ${pkg} for ${FUZZ_TIME}"
  corpus="${pkg}/testdata/fuzz/${name}"
  before="$(corpus_size "${corpus}")"
  if ! fuzz "${pkg}" "${name}"; then
    # A finding is written to the corpus and fails the run. A failure that
    # wrote nothing is the fuzzing engine losing a worker on a loaded
    # machine: run once more to tell.
    if [[ "$(corpus_size "${corpus}")" != "${before}" ]]; then
      echo "fuzzing ${name} found a failing input in ${corpus}" >&2
      exit 1
    fi
    echo ">>> ${name} failed without a finding; running it again"
    fuzz "${pkg}" "${name}"
  fi
done
