package wechatapi

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// startEdge runs the edge binary with the fake's app and the egress
// listener; it returns the process and the listener's address.
func startEdge(t *testing.T, f *fakeWechat, extra string) (*testpeer.EdgeProcess, string) {
	t.Helper()
	t.Setenv("WX_TEST_SECRET", testSecret)
	addr := testpeer.FreePort(t)
	e := testpeer.StartEdge(t, fmt.Sprintf("listen_wechat_api = %q\n", addr), edgeBody(f, extra))
	return e, addr
}

// edgeBody is the config below [server]: the fake's app, whose secret is
// read from WX_TEST_SECRET, and [wechat_api] pointing at the fake.
func edgeBody(f *fakeWechat, extra string) string {
	return fmt.Sprintf(`
[[apps]]
name = "shop"
appid = %q
secret = "${WX_TEST_SECRET}"

[[routes]]
name = "hello"
respond = { body = "hi" }

[sessions]
secrets = ["0123456789abcdef0123456789abcdef"]

[wechat_api]
base_url = %q
timeout = "10s"
%s`, testAppID, f.URL(), extra)
}

var client = &http.Client{Timeout: 20 * time.Second}

// call sends a request to the egress listener and returns the status and
// body.
func call(t *testing.T, c *http.Client, method, u string, body []byte, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// The egress listener through the binary: calls get the token added and
// bodies pass unchanged; a token rejected mid-flight is refreshed once and
// the call retried once; a non-token error is passed back untouched and
// never retried; an app using HTTP_PROXY reaches WeChat through edge; the
// token endpoint answers; neither the log nor the metrics hold a token.
func TestEgressThroughBinary(t *testing.T) {
	f := newFakeWechat(t, time.Now)
	e, addr := startEdge(t, f, "")
	base := "http://" + addr

	const check = "/wxa/msg_sec_check"
	body := []byte(`{"content":"hello","openid":"o1"}`)
	status, ans := call(t, client, "POST", base+check+"?a=1&access_token=app-sent-this", body, "Content-Type", "application/json")
	if status != 200 || !strings.Contains(ans, `"errcode":0`) || !strings.Contains(ans, `"query_a":"1"`) {
		t.Fatalf("first call: %d %s", status, ans)
	}
	if want := sha(body); f.BodySum(check) != want {
		t.Fatal("the body reached WeChat changed")
	}
	stable0, _ := f.Counts()

	t.Run("token rejected mid-flight: one refresh, one retry", func(t *testing.T) {
		before := f.Calls(check)
		f.Expire()
		status, ans := call(t, client, "POST", base+check, body)
		if status != 200 || !strings.Contains(ans, `"errcode":0`) {
			t.Fatalf("after expiry: %d %s", status, ans)
		}
		stable, forced := f.Counts()
		if stable != stable0+1 || forced != 0 || f.Calls(check) != before+2 {
			t.Fatalf("stable_token calls %d (want %d), forced %d, API calls %d (want %d)", stable, stable0+1, forced, f.Calls(check), before+2)
		}
	})

	t.Run("a non-token error is not retried", func(t *testing.T) {
		const send = "/cgi-bin/message/subscribe/send"
		quota := `{"errcode":45009,"errmsg":"reach max api daily quota limit rid: 3"}`
		f.Answer(send, quota)
		stable, _ := f.Counts()
		status, ans := call(t, client, "POST", base+"/"+testAppID+send, []byte(`{"touser":"o1"}`))
		if status != 200 || ans != quota {
			t.Fatalf("quota answer: %d %s", status, ans)
		}
		if n := f.Calls(send); n != 1 {
			t.Fatalf("API calls: %d, want 1", n)
		}
		if now, _ := f.Counts(); now != stable {
			t.Fatal("a quota answer refreshed the token")
		}
	})

	t.Run("HTTP_PROXY and absolute-form requests", func(t *testing.T) {
		proxyURL, _ := url.Parse(base)
		app := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
		status, ans := call(t, app, "GET", "http://api.weixin.qq.com/cgi-bin/openapi/quota/get?a=2", nil)
		if status != 200 || !strings.Contains(ans, `"query_a":"2"`) || !strings.Contains(ans, `"method":"GET"`) {
			t.Fatalf("through the proxy: %d %s", status, ans)
		}
		status, ans = call(t, app, "GET", "http://example.com/cgi-bin/openapi/quota/get", nil)
		if status != 403 || !strings.Contains(ans, "40301") {
			t.Fatalf("another host through the proxy: %d %s", status, ans)
		}
	})

	t.Run("a media upload streams through unchanged", func(t *testing.T) {
		big := make([]byte, 3<<20)
		_, _ = rand.Read(big)
		const upload = "/cgi-bin/media/upload"
		status, ans := call(t, client, "POST", base+upload+"?type=image", big, "Content-Type", "application/octet-stream", "X-Wx-Appid", testAppID)
		if status != 200 || !strings.Contains(ans, fmt.Sprintf(`"len":%d`, len(big))) || f.BodySum(upload) != sha(big) {
			t.Fatalf("upload: %d %s", status, ans)
		}
	})

	t.Run("a large body is not sent twice", func(t *testing.T) {
		big := make([]byte, 2<<20)
		const upload = "/cgi-bin/media/upload"
		before := f.Calls(upload)
		stable, _ := f.Counts()
		f.Expire()
		status, ans := call(t, client, "POST", base+upload+"?type=image", big)
		if status != 200 || !strings.Contains(ans, `"errcode":42001`) || f.Calls(upload) != before+1 {
			t.Fatalf("upload with an expired token: %d %s, %d calls", status, ans, f.Calls(upload)-before)
		}
		// The token was refreshed all the same: the app's own retry works.
		status, ans = call(t, client, "POST", base+upload+"?type=image", big)
		if now, _ := f.Counts(); status != 200 || !strings.Contains(ans, `"errcode":0`) || now != stable+1 {
			t.Fatalf("the app's retry: %d %s, %d stable_token calls", status, ans, now-stable)
		}
	})

	t.Run("a browser page cannot use the listener", func(t *testing.T) {
		before := f.Calls(check)
		if status, ans := call(t, client, "GET", base+"/wechat/token", nil, "Host", "rebound.example:9190"); status != 403 || strings.Contains(ans, "TOKEN-") {
			t.Fatalf("rebound Host: %d %s", status, ans)
		}
		if status, _ := call(t, client, "POST", base+check, body, "Sec-Fetch-Site", "cross-site"); status != 403 {
			t.Fatalf("cross-origin POST: %d", status)
		}
		if f.Calls(check) != before {
			t.Fatal("a refused request reached WeChat")
		}
	})

	t.Run("GET /wechat/token", func(t *testing.T) {
		status, ans := call(t, client, "GET", base+"/wechat/token?appid="+testAppID, nil)
		var tok struct {
			AccessToken string `json:"access_token"`
			ExpiresIn   int    `json:"expires_in"`
		}
		if status != 200 || json.Unmarshal([]byte(ans), &tok) != nil || tok.AccessToken != f.Current() || tok.ExpiresIn < 7000 || tok.ExpiresIn > 7200 {
			t.Fatalf("token endpoint: %d %s", status, ans)
		}
		if status, _ := call(t, client, "GET", base+"/wechat/token?appid=wxnotconfigured", nil); status != 400 {
			t.Fatalf("unknown appid: %d", status)
		}
	})

	metrics := e.Metrics(t, "edge_wechat_")
	for _, want := range []string{
		`edge_wechat_api_calls_total{api="/wxa/msg_sec_check",app="shop",class="token"} 1`,
		`edge_wechat_api_calls_total{api="/wxa/msg_sec_check",app="shop",class="ok"} 2`,
		`edge_wechat_api_calls_total{api="/cgi-bin/message/subscribe/send",app="shop",class="quota"} 1`,
		`edge_wechat_api_calls_total{api="/cgi-bin/media/upload",app="shop",class="token"} 1`,
		`edge_wechat_api_calls_total{api="other",app="shop",class="ok"} 0`,
		`edge_wechat_token_refreshes_total{app="shop",result="fetched"} 3`,
		`edge_wechat_token_expiry_timestamp_seconds{app="shop"}`,
	} {
		if strings.HasSuffix(want, " 0") {
			if strings.Contains(metrics, strings.TrimSuffix(want, " 0")) {
				t.Errorf("metrics have %s", want)
			}
			continue
		}
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, metrics)
		}
	}
	for _, leak := range []string{"TOKEN-", testSecret, "app-sent-this"} {
		if strings.Contains(e.Metrics(t, ""), leak) || strings.Contains(e.Stderr(), leak) || strings.Contains(e.Stdout(), leak) {
			t.Errorf("%q reached the metrics or the logs", leak)
		}
	}
}

// Two edge replicas sharing one Redis fetch the token once, and after a
// rejection one of them refreshes while the other reads the new token:
// one stable_token call per renewal, one force_refresh when WeChat keeps
// handing out the refused token.
func TestTwoReplicasOneRedis(t *testing.T) {
	f := newFakeWechat(t, time.Now)
	rdb := testpeer.Redis(t)
	cluster := fmt.Sprintf("\n[cluster]\nredis = %q\n", rdb.URL())
	var bases []string
	for range 2 {
		_, addr := startEdge(t, f, cluster)
		bases = append(bases, "http://"+addr)
	}
	const path = "/wxa/generatescheme"
	burst := func() {
		t.Helper()
		var wg sync.WaitGroup
		for _, b := range bases {
			for range 4 {
				wg.Go(func() {
					req, _ := http.NewRequest("POST", b+path, strings.NewReader(`{}`))
					resp, err := client.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					ans, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if !strings.Contains(string(ans), `"errcode":0`) {
						t.Errorf("answer: %s", ans)
					}
				})
			}
		}
		wg.Wait()
	}
	burst()
	if stable, _ := f.Counts(); stable != 1 {
		t.Fatalf("stable_token calls by two replicas: %d, want 1", stable)
	}
	f.Expire()
	burst()
	if stable, forced := f.Counts(); stable != 2 || forced != 0 {
		t.Fatalf("after an expiry: %d stable_token calls, %d forced; want 2 and 0", stable, forced)
	}
	f.Revoke()
	burst()
	// One normal call that brings the refused token back, then one force.
	if stable, forced := f.Counts(); stable != 4 || forced != 1 {
		t.Fatalf("after a revocation: %d stable_token calls, %d forced; want 4 and 1", stable, forced)
	}
}

// An [[apps]] change reaches the token service on reload: a wrong secret
// gives no token; the corrected one, reloaded with SIGHUP, does.
func TestAppsFollowReload(t *testing.T) {
	f := newFakeWechat(t, time.Now)
	t.Setenv("WX_TEST_SECRET", "not-the-secret")
	addr := testpeer.FreePort(t)
	serverExtra := fmt.Sprintf("listen_wechat_api = %q\n", addr)
	e := testpeer.StartEdge(t, serverExtra, edgeBody(f, ""))
	tokenURL := "http://" + addr + "/wechat/token"
	if status, ans := call(t, client, "GET", tokenURL, nil); status != 502 || !strings.Contains(ans, "50202") {
		t.Fatalf("with a wrong secret: %d %s", status, ans)
	}
	e.WriteConfig(serverExtra, strings.Replace(edgeBody(f, ""), "${WX_TEST_SECRET}", testSecret, 1))
	e.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, ans := call(t, client, "GET", tokenURL, nil)
		if status == 200 && strings.Contains(ans, f.Current()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the reload: %d %s", status, ans)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
