#!/usr/bin/env bash
# Provides kube-apiserver and etcd for envtest without downloading any release binary.
#
# Order of preference:
#   1. $KUBEBUILDER_ASSETS, if it already holds kube-apiserver and etcd;
#   2. the setup-envtest cache layout: $ENVTEST_DIR/k8s/<version>-linux-<arch>;
#   3. a build from source through the Go module proxy, into that cache directory
#      (kube-apiserver from k8s.io/kubernetes with every staging module pinned, etcd from
#      go.etcd.io/etcd/server/v3), each in a throwaway module so nothing leaks into go.mod.
#
# Prints the directory holding the binaries on stdout (everything else goes to stderr), so
#   export KUBEBUILDER_ASSETS="$(hack/envtest.sh)"
# works. The cache lives outside the clone and is reused by every later run.
set -euo pipefail

K8S_VERSION="${ENVTEST_K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ENVTEST_ETCD_VERSION:-v3.7.3}"
ARCH="$(go env GOARCH)"
ENVTEST_DIR="${ENVTEST_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/kubebuilder-envtest}"
DEST="$ENVTEST_DIR/k8s/${K8S_VERSION}-linux-${ARCH}"

log() { echo "envtest: $*" >&2; }
have() { [ -f "$1/kube-apiserver" ] && [ -x "$1/kube-apiserver" ] && [ -f "$1/etcd" ] && [ -x "$1/etcd" ]; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && have "$KUBEBUILDER_ASSETS"; then
  echo "$KUBEBUILDER_ASSETS"; exit 0
fi
if have "$DEST"; then
  echo "$DEST"; exit 0
fi

mkdir -p "$DEST"
# An interrupted or broken earlier build may have left something that is not a binary.
for b in etcd kube-apiserver; do [ -f "$DEST/$b" ] || rm -rf "${DEST:?}/$b"; done
# One builder at a time; a second caller waits and then finds the binaries.
exec 9>"$DEST/.lock"
flock 9
if have "$DEST"; then echo "$DEST"; exit 0; fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/out"
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off

build_apiserver() {
  local mod="$work/mod-apiserver"
  mkdir -p "$mod" && cd "$mod"
  log "building kube-apiserver v${K8S_VERSION} from source (cold: ~10 min on 2 cores)"
  go mod init envtest-apiserver >/dev/null 2>&1
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local
  # paths; a consumer must pin every one of them to the matching v0.x release instead.
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  local staging
  staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod" | sort -u)"
  [ -n "$staging" ] || { log "found no staging modules in $gomod"; exit 1; }
  local args=()
  for m in $staging; do args+=("-replace=$m=$m@v0.${K8S_VERSION#1.}"); done
  go mod edit "${args[@]}"
  go get "k8s.io/kubernetes@v${K8S_VERSION}" >&2
  local ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=v${K8S_VERSION} -X $p.gitMajor=${K8S_VERSION%%.*}"
    ldflags+=" -X $p.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X $p.gitTreeState=clean"
  done
  go build -trimpath -ldflags "$ldflags" -o "$work/out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
}

build_etcd() {
  local mod="$work/mod-etcd"
  mkdir -p "$mod" && cd "$mod"
  log "building etcd ${ETCD_VERSION} from source (~1 min)"
  go mod init envtest-etcd >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >&2
  go build -trimpath -ldflags "-s -w" -o "$work/out/etcd" go.etcd.io/etcd/server/v3
}

start=$(date +%s)
build_etcd
build_apiserver
mv "$work/out/etcd" "$work/out/kube-apiserver" "$DEST/"
log "built into $DEST in $(( $(date +%s) - start ))s"
echo "$DEST"
