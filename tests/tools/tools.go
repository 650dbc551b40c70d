//go:build tools

// Package tools is never built: its imports keep go.mod and go.sum holding every
// module deploy/build-clients.sh needs for crictl, critest and the kubelet.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"

	// critest is a test binary (go test -c ./cmd/critest has only a _test.go file);
	// these are its imports, so go mod tidy keeps their modules.
	_ "github.com/onsi/ginkgo/v2"
	_ "github.com/onsi/ginkgo/v2/types"
	_ "github.com/onsi/gomega"
	_ "sigs.k8s.io/cri-tools/pkg/benchmark"
	_ "sigs.k8s.io/cri-tools/pkg/common"
	_ "sigs.k8s.io/cri-tools/pkg/framework"
	_ "sigs.k8s.io/cri-tools/pkg/validate"
	_ "sigs.k8s.io/cri-tools/pkg/version"
)
