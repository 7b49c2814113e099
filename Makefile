# queuejob-operator — kubebuilder target names plus what the project needs.
# Tool versions are pinned here and nowhere else; tools are built into ./bin from the
# Go module proxy. Nothing is downloaded from anywhere else.

# The images of make image: $(IMAGE_REPO)/<name>:$(VERSION). VERSION is the chart's
# appVersion (test/image checks that they agree); IMG is the manager's image.
VERSION ?= 0.1.0
IMAGE_REPO ?= ghcr.io/queuejob
IMG ?= $(IMAGE_REPO)/queuejob-operator:$(VERSION)
IMAGE_PLATFORMS ?= linux/amd64,linux/arm64
# Empty: all of queuejob-operator queuejob-worker pi job-wq-1 job-wq-2.
IMAGES ?=
CONTROLLER_TOOLS_VERSION ?= v0.23.0
HELM_VERSION ?= v3.22.0
# v5.8.2 is the newest kustomize that builds with Go 1.26 (v5.8.3 needs Go 1.27).
KUSTOMIZE_VERSION ?= v5.8.2
# KEDA's operator, the peer of make bench; test/bench/keda/go.mod requires this version.
KEDA_VERSION ?= v2.21.0
ENVTEST_K8S_VERSION ?= 1.37.2
ENVTEST_ETCD_VERSION ?= v3.7.3
# A loaded 2-core machine starts kube-apiserver slowly.
KUBEBUILDER_CONTROLPLANE_START_TIMEOUT ?= 3m
export KUBEBUILDER_CONTROLPLANE_START_TIMEOUT

LOCALBIN ?= $(shell pwd)/bin
# Static, stripped binaries that say their version and commit (--version); -dirty marks a
# modified tree. (The Go settings here have -buildvcs=false, so Go would not record it.)
REVISION ?= $(shell git describe --always --dirty --abbrev=40 --match=none 2>/dev/null)
VERSION_LDFLAGS = -X github.com/queuejob/queuejob-operator/pkg/version.Version=$(VERSION) -X github.com/queuejob/queuejob-operator/pkg/version.Revision=$(REVISION)
GO_LDFLAGS ?= -s -w $(VERSION_LDFLAGS)
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
CHART ?= charts/queuejob-operator
# -count=1: the tests talk to real servers, which go test's result cache cannot see.
# -timeout: the envtest suite runs longer than go test's default of 10 minutes.
GO_TEST_FLAGS ?= -race -count=1 -timeout 60m
KUBECTL ?= kubectl

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-19s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

# crdtrim keeps the CRD small enough for a client-side kubectl apply: see hack/crdtrim.
.PHONY: manifests
manifests: controller-gen ## Generate the CRD and RBAC manifests under config/; drop the docs of embedded upstream types from the CRD.
	$(CONTROLLER_GEN) rbac:roleName=queuejob-operator-manager crd:generateEmbeddedObjectMeta=true paths="./..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	go run ./hack/crdtrim config/crd/bases/*.yaml
	hack/chart-gen.sh $(CHART)

# The chart's CRD and manager rules are config/'s, wrapped in templates (the rules become a
# ClusterRole, or Roles in watchNamespaces): the CRD keeps
# helm.sh/resource-policy: keep unless crds.keep is false.
.PHONY: chart-crd
chart-crd: ## Generate the chart's CRD and manager rules templates from config/crd/bases and config/rbac/role.yaml.
	hack/chart-gen.sh $(CHART)

.PHONY: helm-lint
helm-lint: helm ## Lint the Helm chart (helm lint --strict).
	$(HELM) lint --strict $(CHART)

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods for the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: verify
verify: manifests generate fmt vet ## Regenerate everything, then fail if the tree differs from git.
	@git diff --exit-code -- . || { echo "generated files or formatting are stale: run 'make manifests generate fmt' and commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- api config charts)" || { git status --porcelain -- api config charts; echo "untracked generated files: commit them"; exit 1; }

.PHONY: test
test: manifests generate fmt vet envtest servers helm kustomize ## Run all tests (the chart and installer tests with bin/helm and bin/kustomize): a real kube-apiserver and etcd (built on first use), real redis-server and rabbitmq-server.
	HELM=$(HELM) KUSTOMIZE=$(KUSTOMIZE) KUBEBUILDER_ASSETS="$$(ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) ENVTEST_ETCD_VERSION=$(ENVTEST_ETCD_VERSION) hack/envtest.sh)" \
		go test $(GO_TEST_FLAGS) ./... -coverprofile cover.out

.PHONY: bench
bench: envtest servers cluster-tool keda ## Measure the operator beside its peers (KEDA, the TTL controller, raw clients, lease expiry): reaction, API cost, memory, cleanup, probes, drain (exec per item, --persistent, the library), reclaim on pod death, 1 000 waves at once; writes bench/results/<date>-<rev>.{md,json} and pprof profiles (~25 min; a first run also builds KEDA and kube-controller-manager, ~40 min more). BENCH_FLAGS e.g. -only=reaction -trials=20.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(GO_LDFLAGS)" -o $(LOCALBIN)/bench-manager ./cmd
	CGO_ENABLED=0 go build -trimpath -ldflags "$(GO_LDFLAGS)" -o $(LOCALBIN)/queuejob-worker ./cmd/queuejob-worker
	@kcm="$$($(CLUSTER_TOOL) build kube-controller-manager)" || exit 1; \
	 keda_mod="$$(cd test/bench/keda && go list -m -f '{{.Dir}}' github.com/kedacore/keda/v2)" || exit 1; \
	 assets="$$(ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) ENVTEST_ETCD_VERSION=$(ENVTEST_ETCD_VERSION) hack/envtest.sh)" || exit 1; \
	 set -x; KUBEBUILDER_ASSETS="$$assets" go run ./test/bench --manager $(LOCALBIN)/bench-manager --worker $(LOCALBIN)/queuejob-worker \
		--kube-controller-manager "$$kcm" --keda $(KEDA) --keda-version $(KEDA_VERSION) --keda-crds "$$keda_mod/config/crd/bases" $(BENCH_FLAGS)

.PHONY: bench-micro
bench-micro: servers ## Go micro-benchmarks: probe latency per backend (p50/p99), reaper pass, sizing, worker library items/s against raw LMOVE and raw XREADGROUP+XACK.
	go test -run '^$$' -bench . -benchmem ./pkg/... ./controllers/...

# KEDA's operator, the peer of make bench, built from the module proxy in its own module
# (test/bench/keda), so that its dependencies stay out of go.mod.
KEDA ?= $(LOCALBIN)/keda-operator-$(KEDA_VERSION)
.PHONY: keda
keda: $(KEDA) ## Build KEDA's operator (KEDA_VERSION), the peer of make bench, into bin/.
$(KEDA):
	@mkdir -p $(LOCALBIN)
	@grep -q '^require github.com/kedacore/keda/v2 $(KEDA_VERSION)$$' test/bench/keda/go.mod || { echo "test/bench/keda/go.mod does not require KEDA $(KEDA_VERSION)"; exit 1; }
	cd test/bench/keda && go build -ldflags "-s -w -X github.com/kedacore/keda/v2/version.Version=$(KEDA_VERSION)" -o $(KEDA) github.com/kedacore/keda/v2/cmd/operator

##@ Build

.PHONY: build
build: manifests generate fmt vet qj workers ## Build the manager into bin/manager, the CLI into bin/qj (and bin/kubectl-qj) and the workers (see workers).
	go build -ldflags "$(VERSION_LDFLAGS)" -o bin/manager ./cmd

# kubectl runs any kubectl-<name> on the PATH as "kubectl <name>": bin/kubectl-qj is a copy
# of bin/qj, ready to copy onto the PATH.
.PHONY: qj
qj: ## Build the CLI into bin/qj and the kubectl plugin bin/kubectl-qj (copy it onto your PATH for `kubectl qj`).
	CGO_ENABLED=0 go build -trimpath -ldflags "$(GO_LDFLAGS)" -o bin/qj ./cmd/qj
	cp bin/qj bin/kubectl-qj

# Static (no cgo) and stripped, to drop into any image: bin/queuejob-worker is
# cmd/queuejob-worker, bin/job-wq-2 the seed's example 3 (examples/job-wq-2).
.PHONY: workers
workers: ## Build queuejob-worker and the job-wq-2 example into bin/, static (CGO_ENABLED=0) and stripped.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(GO_LDFLAGS)" -o bin/queuejob-worker ./cmd/queuejob-worker
	CGO_ENABLED=0 go build -trimpath -ldflags "$(GO_LDFLAGS)" -o bin/job-wq-2 ./examples/job-wq-2

# No Docker: hack/image cross-compiles static binaries and writes OCI image layouts
# (internal/image). Each tarball imports with `ctr -n k8s.io images import`.
.PHONY: image
image: ## Build the images (manager, queuejob-worker, pi, job-wq-1, job-wq-2) for IMAGE_PLATFORMS into dist/images/<name>.tar, without Docker.
	go run ./hack/image --version $(VERSION) --repo $(IMAGE_REPO) --platforms $(IMAGE_PLATFORMS) --out dist/images $(IMAGES)

.PHONY: run
run: manifests generate fmt vet ## Run the manager on this machine against the cluster of the current kubeconfig.
	go run ./cmd

##@ Deployment

# The installer is config/default built with kustomize, the image set to IMG; it holds the
# same objects as the Helm chart at its default values (test/chart checks it).
.PHONY: build-installer
build-installer: manifests kustomize ## Write dist/install.yaml (CRD, RBAC, manager, metrics Service in queuejob-system) from config/ for `kubectl apply -f`; the image is IMG.
	@mkdir -p dist
	$(KUSTOMIZE) build config/default | sed 's|^\(        image: \)ghcr.io/queuejob/queuejob-operator:0.1.0$$|\1$(IMG)|' > dist/install.yaml
	@grep -q '^        image: $(IMG)$$' dist/install.yaml || { echo "dist/install.yaml: the manager's image is not $(IMG): see config/manager/kustomization.yaml"; exit 1; }
	@echo "wrote dist/install.yaml ($(IMG)): kubectl apply -f dist/install.yaml"

.PHONY: install
install: manifests ## Install the CRD into the cluster of the current kubeconfig.
	$(KUBECTL) apply -f config/crd/bases

.PHONY: uninstall
uninstall: manifests ## Remove the CRD (and every QueueJob) from the cluster of the current kubeconfig.
	$(KUBECTL) delete --ignore-not-found -f config/crd/bases

##@ Local cluster

# A one-node Kubernetes v1.37.2 on this machine, without Docker (see docs/local-cluster.md): etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet + containerd, kube-proxy,
# built from source through the Go module proxy into $${XDG_CACHE_HOME:-~/.cache}/queuejob-operator
# (cold: 25-50 min on 2 cores, kube-apiserver and etcd included). Needs root. CLUSTER_FLAGS e.g. --state-dir=/var/tmp/qc --node-ip=...
# KUEUE=1 adds --kueue: cluster-up also runs Kueue (built from the module proxy on first use).
CLUSTER_TOOL ?= $(LOCALBIN)/queuejob-cluster
CLUSTER_FLAGS ?=
ifneq ($(KUEUE),)
CLUSTER_FLAGS += --kueue
endif

.PHONY: cluster-tool
cluster-tool: ## Build hack/cluster into bin/queuejob-cluster.
	@go build -o $(CLUSTER_TOOL) ./hack/cluster

.PHONY: cluster-up
cluster-up: cluster-tool ## Start the local cluster (build what is missing), wait for the node and a smoke pod; prints export KUBECONFIG=...; links bin/kubectl. KUEUE=1 also runs Kueue.
	$(CLUSTER_TOOL) up $(CLUSTER_FLAGS)

.PHONY: cluster-kueue-down
cluster-kueue-down: cluster-tool ## Take Kueue (cluster-up KUEUE=1) off the local cluster: its webhooks, CRDs and objects, process; the cluster keeps running.
	$(CLUSTER_TOOL) kueue-down $(CLUSTER_FLAGS)

.PHONY: cluster-down
cluster-down: cluster-tool ## Stop the local cluster, undo its changes to the host, remove its state directory.
	$(CLUSTER_TOOL) down $(CLUSTER_FLAGS)

.PHONY: cluster-load
cluster-load: cluster-tool ## Import dist/images/*.tar (make image) into the local cluster's containerd.
	$(CLUSTER_TOOL) load $(CLUSTER_FLAGS)

.PHONY: cluster-status
cluster-status: cluster-tool ## Show the local cluster (node IP, kubeconfig, components); CLUSTER_FLAGS=-o=json for scripts.
	@$(CLUSTER_TOOL) status $(CLUSTER_FLAGS)

##@ Demo and e2e

# The demo and the e2e suite build the images for this machine's platform only: the
# cross-compiled arm64 half of make image is the slow part of a cold build.
HOST_PLATFORM ?= linux/$(shell go env GOARCH)

.PHONY: demo
demo: helm qj cluster-tool servers ## The seed's three examples on the operator, installed with helm, in the cluster KUBECONFIG names or the local one (brought up if needed).
	@$(MAKE) --no-print-directory image IMAGE_PLATFORMS=$(HOST_PLATFORM)
	go run ./hack/demo --cluster "$(CLUSTER_TOOL) $(CLUSTER_FLAGS)" --helm $(HELM) --qj bin/qj --image-repo $(IMAGE_REPO) --image-tag $(VERSION)

.PHONY: demo-clean
demo-clean: helm cluster-tool ## Delete what make demo made: its namespace, the helm release, the brokers it started.
	go run ./hack/demo --cluster "$(CLUSTER_TOOL) $(CLUSTER_FLAGS)" --helm $(HELM) clean

.PHONY: test-e2e
test-e2e: helm cluster-tool servers ## Run the e2e suite (test/e2e) on the cluster KUBECONFIG names; unset: on the local cluster (brought up if needed). The local cluster always gets the fresh images.
	@$(MAKE) --no-print-directory image IMAGE_PLATFORMS=$(HOST_PLATFORM)
	@if [ -z "$$KUBECONFIG" ]; then $(MAKE) --no-print-directory cluster-up; fi
	@local="$$($(CLUSTER_TOOL) status -o kubeconfig $(CLUSTER_FLAGS) 2>/dev/null || true)"; \
	 if [ -n "$$local" ] && [ "$$(realpath -m "$${KUBECONFIG:-$$local}")" = "$$(realpath -m "$$local")" ]; then $(MAKE) --no-print-directory cluster-load; fi
	KUBECONFIG="$${KUBECONFIG:-$$($(CLUSTER_TOOL) status -o kubeconfig $(CLUSTER_FLAGS))}" HELM=$(HELM) KUBECTL="$$(test -x $(LOCALBIN)/kubectl && echo $(LOCALBIN)/kubectl || echo kubectl)" \
		IMAGE_REPO=$(IMAGE_REPO) IMAGE_TAG=$(VERSION) E2E_CLUSTER_TOOL="$(CLUSTER_TOOL) $(CLUSTER_FLAGS)" go test -tags e2e -count=1 -timeout 60m -v ./test/e2e/ -ginkgo.v

##@ Tools

.PHONY: envtest
envtest: ## Provide kube-apiserver and etcd for envtest (cache, or a build from source; no download).
	@ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) ENVTEST_ETCD_VERSION=$(ENVTEST_ETCD_VERSION) hack/envtest.sh >/dev/null

.PHONY: servers
servers: ## Install redis-server, rabbitmq-server and python3-redis from Debian's packages if missing (the tests start their own servers).
	@hack/install-servers.sh

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Build controller-gen into ./bin.
$(CONTROLLER_GEN):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $(CONTROLLER_GEN)

.PHONY: kustomize
kustomize: $(KUSTOMIZE) ## Build the pinned kustomize (KUSTOMIZE_VERSION) into bin/kustomize-<version>, for build-installer and the installer tests.
$(KUSTOMIZE):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	mv $(LOCALBIN)/kustomize $(KUSTOMIZE)

.PHONY: helm
helm: $(HELM) ## Build the pinned helm (HELM_VERSION) into bin/helm-<version>, linked as bin/helm.
$(HELM):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv $(LOCALBIN)/helm $(HELM)
	ln -sf helm-$(HELM_VERSION) $(LOCALBIN)/helm
