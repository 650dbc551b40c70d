// The peer runtimes the benchmark compares peapod with (tests/bench/compare.py), built
// from their Go modules by deploy/build-peers.sh. This file pins their versions; go.sum
// authenticates their module zips. No package here imports them and nothing is built
// from this module's dependency graph: each peer is built inside its own module
// directory with its own go.mod and go.sum, as its Makefile builds a release. (They are
// not in ../go.mod because merging graphs breaks them: with the kubelet v1.37 graph, or
// with containerd v2's, CRI-O v1.34's imports of k8s.io/kubelet/pkg/cri/streaming and
// github.com/opencontainers/runc/libcontainer/cgroups no longer exist at the versions
// the merged graph selects.) Change a version with `go get MODULE@VERSION` here; `go mod
// tidy` would drop both lines, since nothing imports them.
module peapod/tests/tools/peers

go 1.26.6

require (
	github.com/containerd/containerd/v2 v2.4.2
	github.com/cri-o/cri-o v1.34.0
)
