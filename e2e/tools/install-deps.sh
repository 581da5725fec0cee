#!/usr/bin/env bash
# Installs everything the tests and the local cluster need, idempotently, with caches outside
# the repository:
#   - Debian packages: docker-registry, skopeo, runsc, runc, protobuf-compiler, chromium;
#   - s3s-fs 0.14.1 from crates.io (the S3 server), into the substrate-rs cache;
#   - etcd, kube-apiserver, kube-controller-manager and kubectl, built from their Go modules.
# Needs root for apt-get; run it again at any time, it only does what is missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CACHE_ROOT="${SUBSTRATE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/substrate-rs}"
S3S_FS_VERSION=0.14.1

apt_packages=(docker-registry skopeo runsc runc protobuf-compiler chromium iproute2 procps)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
# The Debian package starts a registry service on :5000 that nothing here uses.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi

tools="$CACHE_ROOT/tools"
if ! "$tools/bin/s3s-fs" --version 2>/dev/null | grep -q "$S3S_FS_VERSION"; then
  echo "installing s3s-fs $S3S_FS_VERSION" >&2
  cargo install s3s-fs --version "$S3S_FS_VERSION" --locked --features binary --root "$tools" >&2
fi

"$here/build-control-plane.sh" >/dev/null
