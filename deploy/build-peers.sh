#!/usr/bin/env bash
# Build the runtimes the benchmark compares peapod with -- CRI-O (crio and its pinns) and
# containerd 2 (containerd and the runc v2 shim) -- from their Go modules, at the versions
# pinned in tests/tools/peers/go.mod.
#   deploy/build-peers.sh          build if needed, then print where the binaries are
#   deploy/build-peers.sh --force  rebuild even if the cache is current
# Output: $PEAPOD_PEERS_DIR (default .cache/peers in the checkout) holding the four
# binaries and a stamp, the sha256 of that go.mod, its go.sum and this script; they are
# rebuilt only when that changes. Each peer is built inside its own module directory in
# the Go module cache (read only; nothing is copied anywhere), with its own go.mod and
# go.sum, the build tags and flags of its Makefile, at the lowest CPU priority. Needs Go,
# the Go module proxy, gcc, pkg-config and libseccomp-dev (deploy/setup.sh bench installs
# them). A first build takes about 4 minutes on 2 cores.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pins="$here/tests/tools/peers"
out="${PEAPOD_PEERS_DIR:-$here/.cache/peers}"
binaries=(crio pinns containerd containerd-shim-runc-v2)

stamp="$(cat "$pins/go.mod" "$pins/go.sum" "${BASH_SOURCE[0]}" "$here/deploy/binary-cache.sh" \
  | sha256sum | cut -d' ' -f1)"
label="build-peers: peer runtimes"
# shellcheck source=deploy/binary-cache.sh
. "$here/deploy/binary-cache.sh"
cache_or_lock "$@"

for tool in go gcc pkg-config; do
  if ! command -v "$tool" >/dev/null; then
    echo "build-peers: needs $tool on PATH (deploy/setup.sh bench installs what it can)" >&2
    exit 1
  fi
done
if ! pkg-config --exists libseccomp; then
  echo "build-peers: CRI-O's seccomp support needs libseccomp-dev (apt-get install libseccomp-dev)" >&2
  exit 1
fi

export GOWORK=off GOFLAGS=-mod=readonly
cd "$pins"
crio_mod=github.com/cri-o/cri-o
ctrd_mod=github.com/containerd/containerd/v2
# Fetch (and check against go.sum) the two modules, then read where they unpacked.
go mod download "$crio_mod" "$ctrd_mod"
field() { go list -m -f "{{$2}}" "$1"; }
crio_dir="$(field "$crio_mod" .Dir)"
crio_version="$(field "$crio_mod" .Version)"
crio_date="$(field "$crio_mod" '.Time.UTC.Format "2006-01-02T15:04:05Z"')"
ctrd_dir="$(field "$ctrd_mod" .Dir)"
ctrd_version="$(field "$ctrd_mod" .Version)"

# CRI-O's Makefile: BUILDTAGS = containers_image_ostree_stub plus what its hack/*_tag.sh
# find on the build host. On a Debian 12 host without btrfs headers those give
# exclude_graphdriver_btrfs and btrfs_noversion, and seccomp where pkg-config finds
# libseccomp; no apparmor, selinux or libsubid without their -dev packages (this host
# enforces neither). containers_image_openpgp (as its cross builds use) verifies
# signatures in Go instead of through gpgme, a C library this host lacks. Flags: -trimpath,
# -s -w and the build date through -X, as its release build.
crio_tags="containers_image_ostree_stub exclude_graphdriver_btrfs btrfs_noversion"
crio_tags+=" containers_image_openpgp seccomp"
crio_ldflags="-s -w -X $crio_mod/internal/version.buildDate=$crio_date"
# containerd's Makefile: tags urfave_cli_no_docs (plus no_grpc for the shim), the version
# through -X, -s -w; the shim static with CGO off. no_btrfs, as its BUILDING.md says for
# hosts without btrfs headers. A module carries no git revision, so Revision is empty.
ctrd_x="-X $ctrd_mod/version.Version=$ctrd_version -X $ctrd_mod/version.Revision="
ctrd_x+=" -X $ctrd_mod/version.Package=$ctrd_mod"

tmp="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
echo "build-peers: building CRI-O $crio_version and containerd $ctrd_version (a first build takes minutes)"
(cd "$crio_dir" && CGO_ENABLED=1 nice -n 19 go build -trimpath -tags "$crio_tags" \
  -ldflags "$crio_ldflags" -o "$tmp/crio" ./cmd/crio)
echo "build-peers: crio built ($((SECONDS - start)) s)"
# pinns, CRI-O's namespace pinner, as pinns/Makefile builds it (static, -O3, stripped).
nice -n 19 gcc -std=c99 -Os -Wall -Werror -Wextra -static -O3 -o "$tmp/pinns" \
  "$crio_dir"/pinns/src/*.c
strip -s "$tmp/pinns"
(cd "$ctrd_dir" && nice -n 19 go build -trimpath -tags "no_btrfs urfave_cli_no_docs" \
  -ldflags "$ctrd_x -s -w" -o "$tmp/containerd" ./cmd/containerd)
(cd "$ctrd_dir" && CGO_ENABLED=0 nice -n 19 go build -trimpath \
  -tags "no_btrfs urfave_cli_no_docs no_grpc" -ldflags "$ctrd_x -extldflags -static -s -w" \
  -o "$tmp/containerd-shim-runc-v2" ./cmd/containerd-shim-runc-v2)

rm -f "$out/stamp"
for b in "${binaries[@]}"; do mv -f "$tmp/$b" "$out/$b"; done
echo "build-peers: built in $((SECONDS - start)) s"
cache_store
