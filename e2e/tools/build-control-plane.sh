#!/usr/bin/env bash
# Builds the real Kubernetes control plane the tests run against: etcd, kube-apiserver,
# kube-controller-manager and kubectl, from their Go modules, into a cache outside the repo.
#
# Idempotent: a binary already in the cache for these versions is not built again.
# Prints the cache directory (the one holding bin/) as its last line.
#
# Go is test infrastructure only; nothing here ships.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.17}"
CACHE_ROOT="${SUBSTRATE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/substrate-rs}"
OUT="$CACHE_ROOT/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
BIN="$OUT/bin"
K8S_COMMANDS=(kube-apiserver kube-controller-manager kubectl)

have_all() {
  [ -x "$BIN/etcd" ] || return 1
  for cmd in "${K8S_COMMANDS[@]}"; do [ -x "$BIN/$cmd" ] || return 1; done
}

if have_all; then
  echo "$OUT"
  exit 0
fi

mkdir -p "$BIN"
work="$OUT/src"
mkdir -p "$work/etcd" "$work/k8s"
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
start=$(date +%s)

# etcd: its server module has `replace` lines of its own, so `go install mod@version` refuses it.
# A one-line wrapper module that requires it builds the same `main` package.
if [ ! -x "$BIN/etcd" ]; then
  echo "building etcd $ETCD_VERSION" >&2
  (
    cd "$work/etcd"
    [ -f go.mod ] || go mod init substrate-rs/etcd-build >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
    go build -trimpath -o "$BIN/etcd.partial" go.etcd.io/etcd/server/v3
    mv "$BIN/etcd.partial" "$BIN/etcd"
  )
fi

# Kubernetes: k8s.io/kubernetes requires its staging modules (k8s.io/api, client-go, …) at
# v0.0.0 and points them at ./staging with `replace`, which does not apply to a dependent
# module. Pin each of them to the matching published v0.x release instead.
if ! have_all; then
  echo "building ${K8S_COMMANDS[*]} $K8S_VERSION" >&2
  (
    cd "$work/k8s"
    staging_version="v0.${K8S_VERSION#v1.}"
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
    {
      echo "module substrate-rs/k8s-build"
      echo
      echo "go 1.24"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      grep -E '^[[:space:]]+k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk -v v="$staging_version" \
        '{ print "replace " $1 " => " $1 " " v }'
    } >go.mod
    # A package main of this module keeps `go mod tidy` from dropping the requirement.
    {
      echo "//go:build tools"
      echo "package tools"
      echo
      for cmd in "${K8S_COMMANDS[@]}"; do echo "import _ \"k8s.io/kubernetes/cmd/$cmd\""; done
    } >tools.go
    go mod tidy >&2
    for cmd in "${K8S_COMMANDS[@]}"; do
      [ -x "$BIN/$cmd" ] && continue
      echo "  go build $cmd" >&2
      go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
        -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)" \
        -o "$BIN/$cmd.partial" "k8s.io/kubernetes/cmd/$cmd"
      mv "$BIN/$cmd.partial" "$BIN/$cmd"
    done
  )
fi

echo "control plane built in $(($(date +%s) - start))s" >&2
echo "$OUT"
