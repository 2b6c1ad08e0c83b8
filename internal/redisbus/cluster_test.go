package redisbus

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/testpeer"
)

// startCluster runs a three-master Redis Cluster on loopback and returns
// its nodes' addresses.
func startCluster(t *testing.T) []string {
	t.Helper()
	server, cli := testpeer.Binary(t, "redis-server"), testpeer.Binary(t, "redis-cli")
	addrs := testpeer.FreePorts(t, 3)
	// The cluster bus port defaults to port+10000, which a free port does
	// not promise: each gets one of its own.
	busPorts := testpeer.FreePorts(t, 3)
	dir := t.TempDir()
	for i, addr := range addrs {
		host, port, _ := net.SplitHostPort(addr)
		_, busPort, _ := net.SplitHostPort(busPorts[i])
		cmd := exec.Command(server, "--bind", host, "--port", port, "--cluster-enabled", "yes",
			"--cluster-port", busPort, "--cluster-config-file", "nodes-"+port+".conf",
			"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis-"+port+".log"))
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting redis-server: %v", err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		testpeer.WaitTCP(t, addr, 10*time.Second)
	}
	out, err := exec.Command(cli, append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, addr := range addrs {
		c := redis.NewClient(&redis.Options{Addr: addr})
		waitFor(t, "the cluster to be ok on "+addr, func() bool {
			info, err := c.ClusterInfo(context.Background()).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		})
		_ = c.Close()
	}
	return addrs
}

// TestBusOnRedisCluster: on a three-master cluster, a bus subscribed
// through a ClusterClient hears messages published on every node, and the
// marker works across slots: flushing every master makes both buses
// republish.
func TestBusOnRedisCluster(t *testing.T) {
	addrs := startCluster(t)
	ctx := context.Background()
	cc1 := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	cc2 := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer cc1.Close()
	defer cc2.Close()
	p1, p2 := newProbe(), newProbe()
	b1, b2 := p1.bus(cc1), p2.bus(cc2)
	defer b1.Close()
	defer b2.Close()
	waitFor(t, "both buses to subscribe", func() bool { return p1.connects.Load() >= 1 && p2.connects.Load() >= 1 })

	if err := b1.Publish(ctx, "ban", "from-bus-1"); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"from-bus-1": true}
	for _, addr := range addrs {
		node := redis.NewClient(&redis.Options{Addr: addr})
		if err := node.Publish(ctx, Channel, "another-replica ban via-"+addr).Err(); err != nil {
			t.Fatal(err)
		}
		_ = node.Close()
		want["via-"+addr] = true
	}
	deadline := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case got := <-p2.got:
			delete(want, got)
		case <-deadline:
			t.Fatalf("not received within 10s: %v", want)
		}
	}

	if err := cc1.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.FlushAll(ctx).Err() }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both buses to republish after the cluster was flushed", func() bool {
		return p1.republishs.Load() == 1 && p2.republishs.Load() == 1
	})
}
