package metrics

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// During a deploy an instance's two versions run side by side: their
// series must differ, and a version with no instance ready still reports 0.
func TestInstanceUsageDuringDeploy(t *testing.T) {
	m := New("test")
	m.RegisterInstanceUsage(func() []InstanceUsage {
		return []InstanceUsage{
			{Upstream: "api", Instance: 0, Version: 1, Ready: true, Running: true, RSSBytes: 1 << 20, CPUSeconds: 1.5},
			{Upstream: "api", Instance: 0, Version: 2, Running: true, RSSBytes: 2 << 20, CPUSeconds: 0.25},
			{Upstream: "api", Instance: 1, Version: 1},
		}
	})
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "edge_upstream_instance_") && !strings.HasPrefix(f.GetName(), "edge_upstream_version_") {
			continue
		}
		for _, s := range f.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := s.GetGauge().GetValue() + s.GetCounter().GetValue()
			got = append(got, fmt.Sprintf("%s{%s} %g", f.GetName(), strings.Join(labels, ","), v))
		}
	}
	want := []string{
		"edge_upstream_instance_cpu_seconds_total{edge_instance=0,upstream=api,version=1} 1.5",
		"edge_upstream_instance_cpu_seconds_total{edge_instance=0,upstream=api,version=2} 0.25",
		"edge_upstream_instance_memory_bytes{edge_instance=0,upstream=api,version=1} 1.048576e+06",
		"edge_upstream_instance_memory_bytes{edge_instance=0,upstream=api,version=2} 2.097152e+06",
		"edge_upstream_version_instances_ready{upstream=api,version=1} 1",
		"edge_upstream_version_instances_ready{upstream=api,version=2} 0",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
