package redisconn_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"edge/internal/redisconn"
	"edge/internal/testpeer"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		url    string
		mode   redisconn.Mode
		tls    bool
		addrs  []string
		master string
	}{
		{"redis://:pw@10.0.0.5:6379/0", redisconn.Single, false, []string{"10.0.0.5:6379"}, ""},
		{"rediss://redis.internal", redisconn.Single, true, []string{"redis.internal:6379"}, ""},
		{"redis://10.0.0.5:26379?master_name=m&addr=10.0.0.6:26379", redisconn.Sentinel, false, []string{"10.0.0.5:26379", "10.0.0.6:26379"}, "m"},
		{"redis-sentinel://:pw@a,b:26380,c/1?master_name=m", redisconn.Sentinel, false, []string{"a:26379", "b:26380", "c:26379"}, "m"},
		{"rediss-sentinel://a?master_name=m&sentinel_password=spw", redisconn.Sentinel, true, []string{"a:26379"}, "m"},
		{"redis+cluster://:pw@a:7000,b:7001,c:7002", redisconn.Cluster, false, []string{"a:7000", "b:7001", "c:7002"}, ""},
		{"rediss+cluster://a?addr=b:7001&dial_timeout=2s&pool_size=20", redisconn.Cluster, true, []string{"a:6379", "b:7001"}, ""},
		{"redis://[::1]:6380", redisconn.Single, false, []string{"[::1]:6380"}, ""},
	} {
		got, err := redisconn.Parse(tc.url)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if got.Mode != tc.mode || got.TLS != tc.tls || !slices.Equal(got.Addrs(), tc.addrs) || got.MasterName() != tc.master {
			t.Errorf("%s: mode %s tls %v addrs %v master %q; want %s %v %v %q", tc.url, got.Mode, got.TLS, got.Addrs(), got.MasterName(), tc.mode, tc.tls, tc.addrs, tc.master)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct{ url, msg string }{
		{"http://:topsecret@a:6379", "scheme"},
		{"redis://:topsecret@a:6379,b:6379", "redis+cluster://"},
		{"redis-sentinel://:topsecret@a:26379", "master_name"},
		{"redis+cluster://:topsecret@a:7000?master_name=m", "takes none"},
		{"redis+cluster://:topsecret@a:7000/3", "database 0 only"},
		{"redis://:topsecret@a:6379?read_timout=1s", "an option edge does not know; the options are addr, "},
		// An unencoded '?' in the password: what follows it reads as an
		// option, and must not be printed.
		{"redis://:top?topsecret@a:6379/0", "must be percent-encoded"},
		{"redis://:topsecret@a:6379?sentinel_password=x", "Sentinel URLs only"},
		{"redis://:topsecret@a:6379/x", "not a database number"},
		{"redis://:topsecret@a:6379?dial_timeout=soon", "dial_timeout"},
		{"redis://:topsecret@", "no host"},
		{"redis-sentinel://a,,b?master_name=m", "address 2 of the host list is empty"},
		{"redis://:topsecret", "no valid port"},
		{"redis://:topsecret@a:99999", "port"},
	} {
		_, err := redisconn.Parse(tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want an error saying %q", tc.url, err, tc.msg)
			continue
		}
		if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("%s: the error shows the password: %v", tc.url, err)
		}
	}
}

// check connects as edge does and returns the check's error.
func check(t *testing.T, url string, files redisconn.TLSFiles) error {
	t.Helper()
	target, err := redisconn.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := redisconn.TLSConfig(files)
	if err != nil {
		t.Fatal(err)
	}
	c := redisconn.NewClient(target, conf)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return redisconn.Check(ctx, c, target)
}

func wantKind(t *testing.T, what string, err error, kind string) {
	t.Helper()
	var ce *redisconn.CheckError
	if !errors.As(err, &ce) || ce.Kind != kind {
		t.Errorf("%s: %v, want a %s problem", what, err, kind)
	}
}

func TestCheckPassword(t *testing.T) {
	r := testpeer.RedisWith(t, "--requirepass", "right-horse-battery")
	if err := check(t, "redis://:right-horse-battery@"+r.Addr, redisconn.TLSFiles{}); err != nil {
		t.Fatalf("right password: %v", err)
	}
	for _, url := range []string{"redis://:wrong-staple-9@" + r.Addr, "redis://" + r.Addr} {
		err := check(t, url, redisconn.TLSFiles{})
		wantKind(t, "wrong password", err, redisconn.Auth)
		if err != nil && strings.Contains(err.Error(), "wrong-staple-9") {
			t.Errorf("the message shows the password: %v", err)
		}
	}
	wantKind(t, "nothing listening", check(t, "redis://"+testpeer.DeadAddr(t), redisconn.TLSFiles{}), redisconn.Unreachable)
}

func TestCheckTLS(t *testing.T) {
	r := testpeer.RedisTLS(t)
	full := redisconn.TLSFiles{CA: r.CAFile, Cert: r.ClientCert, Key: r.ClientKey}
	if err := check(t, r.URL(), full); err != nil {
		t.Fatalf("private CA and client certificate: %v", err)
	}
	wantKind(t, "the system roots only", check(t, r.URL(), redisconn.TLSFiles{Cert: r.ClientCert, Key: r.ClientKey}), redisconn.TLS)
	wantKind(t, "another CA", check(t, r.URL(), redisconn.TLSFiles{CA: r.OtherCA, Cert: r.ClientCert, Key: r.ClientKey}), redisconn.TLS)
	wantKind(t, "no client certificate", check(t, r.URL(), redisconn.TLSFiles{CA: r.CAFile}), redisconn.TLS)
	wantKind(t, "redis:// to a TLS port", check(t, "redis://"+r.Addr, redisconn.TLSFiles{}), redisconn.Unreachable)
}

func TestCheckTLSPlainServer(t *testing.T) {
	r := testpeer.Redis(t)
	err := check(t, "rediss://"+r.Addr, redisconn.TLSFiles{})
	wantKind(t, "rediss:// to a plain port", err, redisconn.Unreachable)
	if err != nil && !strings.Contains(err.Error(), "plain-text port") {
		t.Errorf("rediss:// to a plain port: %v; want a hint at the plain port", err)
	}
}

func TestCheckTopologies(t *testing.T) {
	c := testpeer.RedisCluster(t)
	if err := check(t, c.URL(), redisconn.TLSFiles{}); err != nil {
		t.Errorf("cluster: %v", err)
	}
	s := testpeer.RedisSentinel(t)
	if err := check(t, s.URL(), redisconn.TLSFiles{}); err != nil {
		t.Errorf("sentinel: %v", err)
	}
	if err := check(t, strings.Replace(s.URL(), s.MasterName, "nosuchmaster", 1), redisconn.TLSFiles{}); err == nil {
		t.Error("sentinel with an unknown master name: no error")
	}
}
