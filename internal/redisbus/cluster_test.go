package redisbus

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
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
	waitFor(t, "both buses to subscribe and look at the marker", func() bool {
		return p1.connects.Load() >= 1 && p2.connects.Load() >= 1 && p1.looked.Load() >= 1 && p2.looked.Load() >= 1
	})

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

// TestBusMarkerPerSlotOnCluster: on a Cluster, flushing only the master
// that holds a hash-tagged list (and the marker of its slot) makes the
// buses republish, though the master of MarkerKey kept its data.
func TestBusMarkerPerSlotOnCluster(t *testing.T) {
	addrs := startCluster(t)
	ctx := context.Background()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer cc.Close()
	home, err := cc.MasterForKey(ctx, MarkerKey)
	if err != nil {
		t.Fatal(err)
	}
	var marker string
	var node *redis.Client
	for i := 0; node == nil; i++ {
		key := "edge:{list" + strings.Repeat("x", i) + "}:marker"
		c, err := cc.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if c.Options().Addr != home.Options().Addr {
			marker, node = key, c
		}
	}
	var republishs, connects atomic.Int32
	b := New(cc, Options{
		OnConnect:  []func(){func() { connects.Add(1) }},
		Republish:  []Republisher{func(context.Context) error { republishs.Add(1); return nil }},
		Markers:    []string{MarkerKey, marker},
		CheckEvery: 50 * time.Millisecond,
	})
	b.Start()
	defer b.Close()
	waitFor(t, "both markers to be set", func() bool {
		return cc.Exists(ctx, MarkerKey).Val() == 1 && cc.Exists(ctx, marker).Val() == 1 && connects.Load() >= 1
	})
	if err := node.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the bus to republish after one master was flushed", func() bool { return republishs.Load() == 1 })
	if cc.Exists(ctx, MarkerKey).Val() != 1 {
		t.Fatal("the flush reached the master of " + MarkerKey)
	}
}
