# Makefile for kubeopencode share. `make dev` and `make test` are the two
# commands a newcomer needs; the rest are the pieces they are made of.

SHELL := /usr/bin/env bash
GO ?= go
BIN_DIR := bin
CONTROL_PLANE_BIN := $(CURDIR)/_output/bin
export KUBEOPENCODE_CONTROL_PLANE_BIN ?= $(CONTROL_PLANE_BIN)
TEST_TIMEOUT ?= 45m
TEST_FLAGS ?=

COMMANDS := aggregated-apiserver controller kubeoc kubectl-agent
# component-base refuses to start a binary whose version is not semantic
# (v1.2.3...), so a tree without a release tag is v0.0.0-<commit>.
GIT_DESCRIBE := $(shell git describe --tags --match 'v[0-9]*' --always --dirty 2>/dev/null || echo dev)
VERSION ?= $(if $(filter v%,$(GIT_DESCRIBE)),$(GIT_DESCRIBE),v0.0.0-$(GIT_DESCRIBE))
VERSION_PKG := k8s.io/component-base/version
LDFLAGS := -X $(VERSION_PKG).gitVersion=$(VERSION) -X $(VERSION_PKG).gitCommit=$(shell git rev-parse HEAD 2>/dev/null)

.PHONY: all
all: build

## build: build the project's commands into bin/ (make dev runs them; the image's build in the Dockerfile trims paths)
.PHONY: build
build:
	@mkdir -p $(BIN_DIR)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN_DIR)/ $(addprefix ./cmd/,$(COMMANDS))

## control-plane: build etcd and the Kubernetes control plane from Go modules into _output/bin
.PHONY: control-plane
control-plane:
	hack/build-control-plane.sh

## node: also build the real test node's kubelet, kube-proxy and containerd into _output/bin (Linux only; elsewhere nothing)
.PHONY: node
node:
	@if [ "$$(uname)" = Linux ]; then hack/build-control-plane.sh --node; fi

## test: verify, then run every test (unit with the race detector, integration on a real control plane, end to end on a real node where the machine allows it, fuzzing)
.PHONY: test
test: verify control-plane node
	$(GO) test -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./...
	$(GO) test -C hack/bench $(TEST_FLAGS) ./...
	$(GO) test -tags e2e -timeout $(NODE_TEST_TIMEOUT) $(TEST_FLAGS) ./test/e2e/
	$(GO) test -race $(TEST_FLAGS) ./pkg/sharehttp/... ./pkg/controller/... ./pkg/share/...
	hack/fuzz.sh

## test-node: the end-to-end test on a real node (root, Linux): the image archives and `kubectl apply -k` of artifacts/ on kubelet, containerd and kube-proxy
NODE_TEST_TIMEOUT ?= 20m
.PHONY: test-node
test-node: control-plane node
	$(GO) test -tags e2e -timeout $(NODE_TEST_TIMEOUT) $(TEST_FLAGS) -v ./test/e2e/

## test-stress: the reliability scenarios at full size (500 sessions, 10^5 requests, 30s outage, 50 cycles); see docs/reliability.md
STRESS_TIMEOUT ?= 20m
.PHONY: test-stress
test-stress: control-plane
	$(GO) test -tags stress -timeout $(STRESS_TIMEOUT) $(TEST_FLAGS) -run Stress -v ./test/integration/

## test-fuzz: run each fuzz target for FUZZ_TIME (default 5s)
.PHONY: test-fuzz
test-fuzz:
	hack/fuzz.sh

## test-unit: the tests that need no control plane
.PHONY: test-unit
test-unit:
	$(GO) test $(TEST_FLAGS) $$($(GO) list ./... | grep -v -e /test/integration -e /internal/testenv)
	$(GO) test -C hack/bench $(TEST_FLAGS) ./...

## test-integration: the tests on a real control plane
.PHONY: test-integration
test-integration: control-plane
	$(GO) test -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./internal/testenv/... ./test/integration/...

## verify: gofmt, go vet, golangci-lint, go mod tidy and generated code are clean
.PHONY: verify
verify:
	hack/verify.sh

## lint: golangci-lint with .golangci.yaml, installed from the Go module proxy into _output/tools
.PHONY: lint
lint:
	hack/lint.sh

## bench: measure the share path against baselines from the same run; writes docs/benchmarks.md (under 10 minutes; not part of test)
BENCH_FLAGS ?=
.PHONY: bench
bench:
	hack/bench.sh $(BENCH_FLAGS)

## update: regenerate generated code
.PHONY: update
update:
	hack/update-codegen.sh

## dev: run the whole system on a local control plane and print a share link (DEV_FLAGS: flags of hack/dev)
DEV_FLAGS ?=
.PHONY: dev
dev: build
	hack/dev.sh --bin-dir=$(BIN_DIR) $(DEV_FLAGS)

## image: build the container image of the servers (needs a container engine)
IMAGE ?= kubeopencode/share:dev
.PHONY: image
image:
	docker build -t $(IMAGE) .

## image-archives: build the servers' image, an Agent image with a shell and the test node's pause image as archives in _output/images, without a container engine (docker load or ctr images import them)
.PHONY: image-archives
image-archives:
	VERSION=$(VERSION) IMAGE=$(IMAGE) hack/build-images.sh

.PHONY: clean
clean:
	rm -rf $(BIN_DIR)

.PHONY: help
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## //'
