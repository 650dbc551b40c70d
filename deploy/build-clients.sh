#!/usr/bin/env bash
# Build the CRI clients the tests drive -- crictl, critest (cri-tools) and the kubelet
# (kubernetes) -- from their Go modules, at the versions pinned in tests/tools/go.mod.
#   deploy/build-clients.sh          build if needed, then print where the binaries are
#   deploy/build-clients.sh --force  rebuild even if the cache is current
# Output: $PEAPOD_CLIENTS_DIR (default .cache/clients in the checkout) holding the three
# binaries and a stamp, the sha256 of tests/tools/go.mod, go.sum and this script. The
# binaries are rebuilt only when that changes, so a second run costs a few milliseconds.
# Needs Go (the version tests/tools/go.mod names, or GOTOOLCHAIN fetches it) and the
# Go module proxy; modules go to the usual module cache, nothing into the checkout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$here/tests/tools"
out="${PEAPOD_CLIENTS_DIR:-$here/.cache/clients}"
binaries=(crictl critest kubelet)

stamp="$(cat "$tools/go.mod" "$tools/go.sum" "${BASH_SOURCE[0]}" "$here/deploy/binary-cache.sh" \
  | sha256sum | cut -d' ' -f1)"
label="build-clients: CRI clients"
# shellcheck source=deploy/binary-cache.sh
. "$here/deploy/binary-cache.sh"
cache_or_lock "$@"

if ! command -v go >/dev/null; then
  echo "build-clients: needs Go ($(sed -n 's/^go //p' "$tools/go.mod") or newer) on PATH" >&2
  exit 1
fi

export GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0
cd "$tools"
version() { go list -m -f '{{.Version}}' "$1"; }
modtime() { go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$1"; }
critools="$(version sigs.k8s.io/cri-tools)"
kube="$(version k8s.io/kubernetes)"
kube_minor="${kube#v*.}"
kube_minor="${kube_minor%%.*}"
kube_major="${kube#v}"
kube_major="${kube_major%%.*}"

# As cri-tools' Makefile: CGO off, -trimpath, the version through -X.
critools_ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${critools#v}"
# As kubernetes' hack/lib/golang.sh for a release kubelet: static, -trimpath, -s -w,
# tags selinux,notest,grpcnotrace and the version of hack/lib/version.sh (the build date
# is the release's module time, so a rebuild gives the same binary; a module carries no
# git commit, so gitCommit is empty rather than the source's "$Format:%H$" placeholder).
kube_ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$kube -X $pkg.gitMajor=$kube_major"
  kube_ldflags+=" -X $pkg.gitMinor=$kube_minor -X $pkg.gitTreeState=clean -X $pkg.gitCommit="
  kube_ldflags+=" -X $pkg.buildDate=$(modtime k8s.io/kubernetes)"
done

tmp="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
echo "build-clients: building crictl and critest $critools, kubelet $kube (a first build takes minutes)"
go build -trimpath -ldflags "$critools_ldflags" -o "$tmp/crictl" sigs.k8s.io/cri-tools/cmd/crictl
# critest is cri-tools' ginkgo suite compiled as a test binary, as its Makefile does.
go test -c -trimpath -ldflags "$critools_ldflags" -o "$tmp/critest" sigs.k8s.io/cri-tools/cmd/critest
go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$kube_ldflags" \
  -o "$tmp/kubelet" k8s.io/kubernetes/cmd/kubelet

rm -f "$out/stamp"
for b in "${binaries[@]}"; do mv -f "$tmp/$b" "$out/$b"; done
echo "build-clients: built in $((SECONDS - start)) s"
cache_store
