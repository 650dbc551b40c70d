// A no-op NRI plugin on containerd/nri's own stub, subscribed to every event, for
// tests/bench/nri_bench.py: what a plugin costs peapod when the plugin itself is as cheap as
// upstream's. nri_bench.py builds it inside a copy of tests/tools' module (its go.mod and
// go.sum pin containerd/nri v0.12.2 and ttrpc v1.2.9), so no module of its own is needed.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
)

type plugin struct{}

func (p *plugin) RunPodSandbox(context.Context, *api.PodSandbox) error    { return nil }
func (p *plugin) StopPodSandbox(context.Context, *api.PodSandbox) error   { return nil }
func (p *plugin) RemovePodSandbox(context.Context, *api.PodSandbox) error { return nil }
func (p *plugin) CreateContainer(context.Context, *api.PodSandbox, *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	return nil, nil, nil
}
func (p *plugin) PostCreateContainer(context.Context, *api.PodSandbox, *api.Container) error {
	return nil
}
func (p *plugin) StartContainer(context.Context, *api.PodSandbox, *api.Container) error { return nil }
func (p *plugin) PostStartContainer(context.Context, *api.PodSandbox, *api.Container) error {
	return nil
}
func (p *plugin) UpdateContainer(context.Context, *api.PodSandbox, *api.Container, *api.LinuxResources) ([]*api.ContainerUpdate, error) {
	return nil, nil
}
func (p *plugin) PostUpdateContainer(context.Context, *api.PodSandbox, *api.Container) error {
	return nil
}
func (p *plugin) StopContainer(context.Context, *api.PodSandbox, *api.Container) ([]*api.ContainerUpdate, error) {
	return nil, nil
}
func (p *plugin) RemoveContainer(context.Context, *api.PodSandbox, *api.Container) error { return nil }

func main() {
	socket := flag.String("socket", "", "NRI socket")
	name := flag.String("name", "noop", "plugin name")
	idx := flag.String("idx", "50", "plugin index")
	flag.Parse()
	s, err := stub.New(&plugin{}, stub.WithPluginName(*name), stub.WithPluginIdx(*idx), stub.WithSocketPath(*socket))
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}
