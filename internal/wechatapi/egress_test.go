package wechatapi

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"edge/internal/config"
	"edge/internal/testpeer"
)

// Calls beyond wechat_api.max_concurrent are answered at once with the
// JSON error and never reach WeChat.
func TestOverloadAnsweredAtOnce(t *testing.T) {
	clock := testpeer.NewClock(time.Now())
	f := newFakeWechat(t, clock.Now)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wxa/slow" {
			entered <- struct{}{}
			<-release
		}
		f.serve(w, r)
	}))
	t.Cleanup(slow.Close)
	w := config.Defaults().WechatAPI
	w.BaseURL, w.MaxConcurrent = slow.URL, 1
	cfg := &config.Config{}
	cfg.Apps = []config.App{{Name: "shop", Platform: config.PlatformWechat, AppID: testAppID, Secret: testSecret}}
	s := New(cfg, Options{Config: w, Now: clock.Now})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)

	done := make(chan int)
	go func() {
		resp, err := http.Post(srv.URL+"/wxa/slow", "application/json", strings.NewReader("{}"))
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-entered
	status, ans := call(t, client, "POST", srv.URL+"/wxa/msg_sec_check", []byte("{}"))
	close(release)
	if status != 429 || !strings.Contains(ans, `"code":42901`) || f.Calls("/wxa/msg_sec_check") != 0 {
		t.Fatalf("over max_concurrent: %d %s", status, ans)
	}
	if first := <-done; first != 200 {
		t.Fatalf("the call in flight: %d", first)
	}
}

// withToken keeps every pair the app wrote but access_token (in any
// spelling a query decoder reads as it), and adds exactly one, escaped.
func FuzzWithToken(f *testing.F) {
	for _, q := range []string{"", "a=1", "access_token=x&a=1", "a=1&&b=2&access_token", "access%5Ftoken=x&access_token=y", "a=%zz"} {
		f.Add(q, "TOK/+=")
	}
	f.Fuzz(func(t *testing.T, raw, tok string) {
		got := withToken(raw, tok)
		if !strings.HasSuffix(got, "access_token="+url.QueryEscape(tok)) {
			t.Fatalf("withToken(%q) = %q: not ending with the token", raw, got)
		}
		want, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		have, err := url.ParseQuery(got)
		if err != nil {
			t.Fatalf("withToken(%q) = %q: %v", raw, got, err)
		}
		if !slices.Equal(have["access_token"], []string{tok}) {
			t.Fatalf("withToken(%q) = %q: access_token %q", raw, got, have["access_token"])
		}
		delete(have, "access_token")
		delete(want, "access_token")
		if !reflect.DeepEqual(have, want) {
			t.Fatalf("withToken(%q) = %q: other pairs %v, want %v", raw, got, have, want)
		}
	})
}
