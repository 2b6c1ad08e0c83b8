package testpeer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startRedisProc starts redis-server with args (a config file first, or
// flags) in dir, logging to dir/redis.log, and waits for addr.
func startRedisProc(t testing.TB, addr, dir string, args ...string) *exec.Cmd {
	t.Helper()
	bin := Binary(t, "redis-server")
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	WaitTCP(t, addr, 10*time.Second)
	return cmd
}

func redisFlags(addr, dir string, extra ...string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return append([]string{"--bind", host, "--port", port, "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log")}, extra...)
}

// RedisWith starts a private redis-server with extra flags (e.g.
// "--requirepass", "pw").
func RedisWith(t testing.TB, extra ...string) *RedisServer {
	t.Helper()
	r := &RedisServer{Addr: FreePort(t), dir: t.TempDir(), t: t}
	r.cmd = startRedisProc(t, r.Addr, r.dir, redisFlags(r.Addr, r.dir, extra...)...)
	return r
}

// RedisClusterSet is a real three-master Redis Cluster on loopback, formed
// by redis-cli --cluster create.
type RedisClusterSet struct {
	Addrs []string
}

// URL is the redis+cluster:// URL listing every master as a seed.
func (c *RedisClusterSet) URL() string { return "redis+cluster://" + strings.Join(c.Addrs, ",") }

// RedisCluster starts three cluster-enabled redis-servers, joins them into
// one cluster (slots spread over the three) and waits until every node
// reports the cluster ok.
func RedisCluster(t testing.TB) *RedisClusterSet {
	t.Helper()
	cli := Binary(t, "redis-cli")
	ports := FreePorts(t, 6) // three nodes and their cluster buses
	c := &RedisClusterSet{Addrs: ports[:3]}
	for i, addr := range c.Addrs {
		dir := t.TempDir()
		_, bus, _ := net.SplitHostPort(ports[3+i])
		startRedisProc(t, addr, dir, redisFlags(addr, dir, "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"), "--cluster-port", bus,
			"--cluster-node-timeout", "2000")...)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	ctx := context.Background()
	for _, addr := range c.Addrs {
		rc := redis.NewClient(&redis.Options{Addr: addr})
		waitUntil(t, 30*time.Second, "cluster ok on "+addr, func() bool {
			info, err := rc.ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3")
		})
		_ = rc.Close()
	}
	return c
}

// RedisSentinelSet is a master, one replica and three sentinels (quorum
// two) on loopback: the smallest set that fails over by itself.
type RedisSentinelSet struct {
	MasterName string
	Sentinels  []string
	// Nodes are the two data nodes; which is master changes on failover.
	Nodes []string
	t     testing.TB
}

// URL is the redis-sentinel:// URL listing the three sentinels.
func (s *RedisSentinelSet) URL() string {
	return "redis-sentinel://" + strings.Join(s.Sentinels, ",") + "?master_name=" + s.MasterName
}

// RedisSentinel starts the set and waits until every sentinel knows the
// replica and the other sentinels, which a failover needs.
func RedisSentinel(t testing.TB) *RedisSentinelSet {
	t.Helper()
	ports := FreePorts(t, 5)
	s := &RedisSentinelSet{MasterName: "edgemaster", Nodes: ports[:2], Sentinels: ports[2:], t: t}
	dir := t.TempDir()
	startRedisProc(t, s.Nodes[0], dir, redisFlags(s.Nodes[0], dir)...)
	host, port, _ := net.SplitHostPort(s.Nodes[0])
	dir = t.TempDir()
	startRedisProc(t, s.Nodes[1], dir, redisFlags(s.Nodes[1], dir, "--replicaof", host, port)...)
	for _, addr := range s.Sentinels {
		dir := t.TempDir()
		shost, sport, _ := net.SplitHostPort(addr)
		conf := fmt.Sprintf("bind %s\nport %s\ndir %s\nlogfile %s\n"+
			"sentinel monitor %s %s %s 2\nsentinel down-after-milliseconds %[5]s 1000\nsentinel failover-timeout %[5]s 10000\n",
			shost, sport, dir, filepath.Join(dir, "sentinel.log"), s.MasterName, host, port)
		path := filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		startRedisProc(t, addr, dir, path, "--sentinel")
	}
	ctx := context.Background()
	for _, addr := range s.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
		waitUntil(t, 30*time.Second, "sentinel "+addr+" to know the replica and its peers", func() bool {
			reps, err := sc.Replicas(ctx, s.MasterName).Result()
			if err != nil || len(reps) != 1 || reps[0]["flags"] != "slave" || reps[0]["master-link-status"] != "ok" {
				return false
			}
			peers, err := sc.Sentinels(ctx, s.MasterName).Result()
			return err == nil && len(peers) == 2
		})
		_ = sc.Close()
	}
	return s
}

// Master asks a sentinel for the master's address.
func (s *RedisSentinelSet) Master() string {
	s.t.Helper()
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinels[0]})
	defer sc.Close()
	a, err := sc.GetMasterAddrByName(context.Background(), s.MasterName).Result()
	if err != nil {
		s.t.Fatalf("SENTINEL GET-MASTER-ADDR-BY-NAME: %v", err)
	}
	return net.JoinHostPort(a[0], a[1])
}

// Failover makes the replica master (SENTINEL FAILOVER) and waits until it
// answers as master and the old master follows it. It returns the new
// master's address.
func (s *RedisSentinelSet) Failover() string {
	s.t.Helper()
	old := s.Master()
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinels[0]})
	defer sc.Close()
	if err := sc.Failover(context.Background(), s.MasterName).Err(); err != nil {
		s.t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	var now string
	waitUntil(s.t, 60*time.Second, "the failover", func() bool {
		now = s.Master()
		if now == old {
			return false
		}
		return role(now) == "master" && role(old) == "slave"
	})
	return now
}

func role(addr string) string {
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	v, err := rc.Do(context.Background(), "ROLE").Slice()
	if err != nil || len(v) == 0 {
		return ""
	}
	r, _ := v[0].(string)
	return r
}

func waitUntil(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RedisTLSServer is a redis-server that speaks only TLS, with a private CA
// and client certificates required.
type RedisTLSServer struct {
	Addr string
	// CAFile signed the server's and the client's certificates.
	CAFile, ClientCert, ClientKey string
	// OtherCA is a CA that signed nothing here: trusting only it must fail.
	OtherCA string
}

// URL is the rediss:// URL of the server.
func (r *RedisTLSServer) URL() string { return "rediss://" + r.Addr }

// RedisTLS makes a private CA with Go's crypto, a server certificate for
// 127.0.0.1 and a client certificate, and starts redis-server on a TLS
// port only, with tls-auth-clients on. extra are further flags.
func RedisTLS(t testing.TB, extra ...string) *RedisTLSServer {
	t.Helper()
	dir := t.TempDir()
	r := &RedisTLSServer{Addr: FreePort(t)}
	ca, caKey := newCA(t, "edge test redis CA")
	r.CAFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", ca.Raw)
	other, _ := newCA(t, "some other CA")
	r.OtherCA = writePEM(t, dir, "other-ca.pem", "CERTIFICATE", other.Raw)
	srvCert, srvKey := leaf(t, ca, caKey, x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := leaf(t, ca, caKey, x509.ExtKeyUsageClientAuth)
	srvCertFile := writePEM(t, dir, "server.pem", "CERTIFICATE", srvCert)
	srvKeyFile := writePEM(t, dir, "server-key.pem", "PRIVATE KEY", srvKey)
	r.ClientCert = writePEM(t, dir, "client.pem", "CERTIFICATE", cliCert)
	r.ClientKey = writePEM(t, dir, "client-key.pem", "PRIVATE KEY", cliKey)
	host, port, _ := net.SplitHostPort(r.Addr)
	args := []string{"--bind", host, "--port", "0", "--tls-port", port,
		"--tls-cert-file", srvCertFile, "--tls-key-file", srvKeyFile, "--tls-ca-cert-file", r.CAFile,
		"--tls-auth-clients", "yes", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log")}
	startRedisProc(t, r.Addr, dir, append(args, extra...)...)
	return r
}

func newCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// leaf issues a certificate for 127.0.0.1 from ca, returning its DER and
// its PKCS #8 key.
func leaf(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage) (der, keyDER []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der, keyDER
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
