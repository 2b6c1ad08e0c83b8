package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"testing"

	"edge/internal/apierror"
)

// wafConfig has one upstream behind a block route (/b/) and a detect
// route (/d/), with waf extra as the [waf] section. The backend echoes the
// body it got.
func wafConfig(addr, extra string) string {
	return fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q]

[[routes]]
name = "b"
path = "/b/"
upstream = "app"
waf = "block"

[[routes]]
name = "d"
path = "/d/"
upstream = "app"
waf = "detect"

[[routes]]
name = "plain"
path = "/plain/"
upstream = "app"
%s`, addr, extra)
}

func echoBody(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	_, _ = w.Write(b)
}

// wafRequest is one request of the tables: method, path with query,
// headers and body.
type wafRequest struct {
	name   string
	method string
	path   string // after the route's prefix
	hdr    http.Header
	body   string
}

func (e *edgeUnderTest) send(t *testing.T, c *http.Client, prefix string, rq wafRequest) (*http.Response, []byte) {
	t.Helper()
	var body io.Reader
	if rq.body != "" {
		body = strings.NewReader(rq.body)
	}
	req, err := http.NewRequest(rq.method, e.url("api.example.com", prefix+rq.path), body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range rq.hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", rq.method, rq.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

var (
	jsonType = http.Header{"Content-Type": {"application/json"}}
	formType = http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
)

// attacks are SQL injection and XSS in every place CRS looks.
var attacks = []wafRequest{
	{"sqli query", "GET", "items?id=" + url.QueryEscape("1' OR '1'='1"), nil, ""},
	{"xss query", "GET", "search?q=" + url.QueryEscape("<script>alert(document.cookie)</script>"), nil, ""},
	{"xss path", "GET", url.PathEscape("<script>alert(1)</script>"), nil, ""},
	{"sqli header", "GET", "items", http.Header{"Referer": {"1' UNION SELECT password FROM users--"}}, ""},
	{"xss cookie", "GET", "items", http.Header{"Cookie": {"name=<script>alert(1)</script>"}}, ""},
	{"sqli json", "POST", "order", jsonType, `{"goods_id":"1 UNION SELECT openid, session_key FROM users--","n":1}`},
	{"xss json nested", "POST", "comment", jsonType, `{"comment":{"text":"<img src=x onerror=alert(1)>"}}`},
	{"sqli form", "POST", "login", formType, "user=" + url.QueryEscape("admin'--") + "&pass=" + url.QueryEscape("' or 1=1--")},
	{"xss form", "POST", "comment", formType, "text=" + url.QueryEscape("<svg/onload=alert(1)>")},
}

// benign are what mini-programs send: none may be refused at paranoia 1.
var benign = []wafRequest{
	{"list", "GET", "goods?page=2&size=20&category=" + url.QueryEscape("水果") + "&openid=oQ3x05Ab-CdEf_gh12", nil, ""},
	{"order json", "POST", "order", jsonType, `{"openid":"oQ3x05Ab-CdEf_gh12","unionid":"o6_bmasdasdsad6_2sgVt7hMZOPfL","remark":"请尽快发货，谢谢！🎉😀","address":{"city":"深圳","line":"南山区科技园 1 号 A 座 #302"},"items":[{"id":3,"n":2}],"price":19.9}`},
	{"profile form", "POST", "profile", formType, "nickname=" + url.QueryEscape("小明 ✨") + "&signature=" + url.QueryEscape("生活不止眼前的苟且，还有诗和远方。") + "&gender=1"},
	{"search emoji", "GET", "search?q=" + url.QueryEscape("奶茶 🧋 半糖 少冰"), nil, ""},
	{"text with apostrophe", "POST", "review", jsonType, `{"text":"It's the best tea I've had, 5 stars! 好喝","score":5}`},
	{"profile with avatar URL", "POST", "profile", jsonType, `{"nickName":"微信用户","avatarUrl":"https://thirdwx.qlogo.cn/mmopen/vi_32/Q0j4TwGTfTLxx7cZ0dL/132","gender":0,"language":"zh_CN","city":"Guangzhou"}`},
	{"REST update", "PUT", "cart/3", jsonType, `{"n":2,"spec":"大杯/少冰"}`},
	{"REST patch", "PATCH", "profile", jsonType, `{"nickname":"小红🌸"}`},
	{"REST delete", "DELETE", "cart/3", nil, ""},
}

// miniProgram adds to hdr what wx.request sends from a phone: WeChat's
// User-Agent and page-frame Referer, and an edge session token.
func miniProgram(hdr http.Header) http.Header {
	h := http.Header{
		"User-Agent":    {"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.49(0x18003137) NetType/WIFI Language/zh_CN miniProgram/wx1234567890abcdef"},
		"Referer":       {"https://servicewechat.com/wx1234567890abcdef/12/page-frame.html"},
		"Authorization": {"Bearer v1.eyJvIjoib1EzeDA1QWItQ2RFZl9naDEyIn0.AbC-dEf_123xyz"},
	}
	for k, v := range hdr {
		h[k] = v
	}
	return h
}

// TestWAFBlocksAndDetects: in block mode every attack gets the house 403
// (40302) and never reaches the upstream; in detect mode the same request
// reaches it, and the access log and metrics say what matched in both.
func TestWAFBlocksAndDetects(t *testing.T) {
	be := startBackend(t, "app", echoBody)
	e := startEdge(t, wafConfig(be.addr, ""))
	for _, rq := range attacks {
		t.Run(rq.name, func(t *testing.T) {
			for proto, c := range e.clients() {
				before := be.count()
				resp, body := e.send(t, c, "/b/", rq)
				if resp.StatusCode != http.StatusForbidden || jsonCode(t, body) != int(apierror.WAFBlocked) {
					t.Fatalf("%s block: %d %s, want 403 40302", proto, resp.StatusCode, body)
				}
				if n := be.count() - before; n != 0 {
					t.Fatalf("%s block: the upstream got %d requests", proto, n)
				}
				resp, body = e.send(t, c, "/d/", rq)
				if resp.StatusCode != http.StatusOK || string(body) != rq.body {
					t.Fatalf("%s detect: %d %q, want the upstream's echo of %q", proto, resp.StatusCode, body, rq.body)
				}
				if n := be.count() - before; n != 1 {
					t.Fatalf("%s detect: the upstream got %d requests, want 1", proto, n)
				}
			}
		})
	}
	for _, rq := range benign {
		t.Run(rq.name, func(t *testing.T) {
			rq.hdr = miniProgram(rq.hdr)
			for proto, c := range e.clients() {
				for _, prefix := range []string{"/b/", "/d/"} {
					before := be.count()
					resp, body := e.send(t, c, prefix, rq)
					if resp.StatusCode != http.StatusOK || string(body) != rq.body || be.count()-before != 1 {
						t.Fatalf("%s %s: %d %q; the upstream must get the request and its body whole", proto, prefix, resp.StatusCode, body)
					}
				}
			}
		})
	}
	metrics := e.metric(t, "edge_waf_")
	for _, want := range []string{
		fmt.Sprintf(`edge_waf_requests_total{action="block",route="b"} %d`, 2*len(attacks)),
		fmt.Sprintf(`edge_waf_requests_total{action="detect",route="d"} %d`, 2*len(attacks)),
		fmt.Sprintf(`edge_waf_requests_total{action="pass",route="b"} %d`, 2*len(benign)),
		`edge_waf_rule_matches_total{route="b",rule="942100"}`,
		`edge_waf_rule_matches_total{route="d",rule="941100"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, metrics)
		}
	}
	if strings.Contains(metrics, `route="plain"`) {
		t.Errorf("a route without waf has firewall series:\n%s", metrics)
	}
	e.stop()
	lines := accessLines(t, e.stdout.String())
	seen := map[string]bool{}
	for _, l := range lines {
		path, _ := l["path"].(string)
		switch {
		case strings.HasPrefix(path, "/b/") && l["status"] == float64(403):
			if l["waf"] != "block" || l["reason"] != reasonWAFBlocked || l["waf_rules"] == nil {
				t.Errorf("blocked request's line: %v", l)
			}
			seen["block"] = true
		case strings.HasPrefix(path, "/d/") && l["waf"] == "detect":
			if rules, _ := l["waf_rules"].(string); rules == "" || strings.ContainsFunc(rules, func(r rune) bool { return r != ',' && (r < '0' || r > '9') }) {
				t.Errorf("detected request's waf_rules %q: want rule ids", rules)
			}
			seen["detect"] = true
		case strings.HasPrefix(path, "/plain/"):
			t.Errorf("plain route got a request: %v", l)
		case l["waf"] == "pass":
			seen["pass"] = true
		}
	}
	if !seen["block"] || !seen["detect"] || !seen["pass"] {
		t.Errorf("access log kinds seen %v, want block, detect and pass", seen)
	}
}

func accessLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		var line map[string]any
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("access log line is not JSON: %q", l)
		}
		out = append(out, line)
	}
	return out
}

// TestWAFExclusions: a rule excluded by id passes everywhere, one
// excluded on a path passes there only, and a route with waf off is not
// inspected at all.
func TestWAFExclusions(t *testing.T) {
	be := startBackend(t, "app", echoBody)
	xss := wafRequest{"xss", "GET", "?q=" + url.QueryEscape("<script>alert(1)</script>"), nil, ""}
	sqli := wafRequest{"sqli", "POST", "", jsonType, `{"id":"1' OR '1'='1"}`}
	// The ids CRS v4.25.0 matches for these at paranoia 1 (the access log's
	// waf_rules): XSS by libinjection, the script tag, the XSS filters and
	// the JavaScript keyword; SQLi by libinjection and the tautology rules.
	e := startEdge(t, wafConfig(be.addr, `
[waf]
exclude_rules = [941100, 941110, 941160, 941390]

[[waf.exclusions]]
path = "/b/article"
rules = [942100, 942130, 942180, 942330, 942390, 942520, 942521]
`))
	for _, tc := range []struct {
		path string
		rq   wafRequest
		want int
	}{
		{"/b/x", xss, http.StatusOK},
		{"/b/article/3", sqli, http.StatusOK},
		{"/b/articles", sqli, http.StatusOK}, // a prefix, as @beginsWith is
		{"/b/comment", sqli, http.StatusForbidden},
		{"/plain/", sqli, http.StatusOK},
	} {
		rq := tc.rq
		rq.path = strings.TrimPrefix(tc.path, "/") + rq.path
		resp, body := e.send(t, e.client, "/", rq)
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %d %s, want %d", rq.name, tc.path, resp.StatusCode, body, tc.want)
		}
	}
}

// TestWAFBodyLimit: a JSON or form body over body_limit is refused on a
// block route (413, as ModSecurity's SecRequestBodyLimitAction Reject)
// and passed whole on a detect route; bodies the firewall does not parse
// (uploads) pass whatever their size.
func TestWAFBodyLimit(t *testing.T) {
	be := startBackend(t, "app", echoBody)
	e := startEdge(t, wafConfig(be.addr, `
[[routes]]
name = "small"
path = "/small/"
upstream = "app"
waf = "block"
max_body = "512"

[waf]
body_limit = "1KB"
`))
	big := `{"text":"` + strings.Repeat("好", 1024) + `"}`
	upload := wafRequest{"upload", "POST", "upload", http.Header{"Content-Type": {"multipart/form-data; boundary=XyZ"}},
		"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n" + strings.Repeat("\xff\xd8", 2048) + "\r\n--XyZ--\r\n"}
	for _, tc := range []struct {
		prefix string
		rq     wafRequest
		want   int
	}{
		{"/b/", wafRequest{"json", "POST", "order", jsonType, big}, http.StatusRequestEntityTooLarge},
		{"/b/", wafRequest{"form", "POST", "order", formType, "text=" + strings.Repeat("a", 2048)}, http.StatusRequestEntityTooLarge},
		{"/d/", wafRequest{"json", "POST", "order", jsonType, big}, http.StatusOK},
		{"/b/", upload, http.StatusOK},
	} {
		for proto, c := range e.clients() {
			before := be.count()
			resp, body := e.send(t, c, tc.prefix, tc.rq)
			if resp.StatusCode != tc.want {
				t.Fatalf("%s %s%s: %d %.80s, want %d", proto, tc.prefix, tc.rq.name, resp.StatusCode, body, tc.want)
			}
			reached := be.count() - before
			if tc.want == http.StatusOK && (reached != 1 || string(body) != tc.rq.body) {
				t.Errorf("%s %s%s: the upstream got %d requests and echoed %d bytes of %d", proto, tc.prefix, tc.rq.name, reached, len(body), len(tc.rq.body))
			}
			if tc.want != http.StatusOK && (reached != 0 || jsonCode(t, body) != int(apierror.BodyTooLarge)) {
				t.Errorf("%s %s%s: refused with %s, upstream reached %d times", proto, tc.prefix, tc.rq.name, body, reached)
			}
		}
	}
	// A chunked body over the route's max_body, smaller than body_limit:
	// the firewall's read stops at max_body, and the answer is the
	// route's 413 as without the firewall (whose read error it passes on).
	for proto, c := range e.clients() {
		req, err := http.NewRequest("POST", e.url("api.example.com", "/small/x"), io.MultiReader(strings.NewReader(big)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || jsonCode(t, body) != int(apierror.BodyTooLarge) {
			t.Errorf("%s chunked over max_body: %d %s, want 413 41301", proto, resp.StatusCode, body)
		}
	}
	if m := e.metric(t, "edge_waf_rule_matches_total"); !strings.Contains(m, `rule="body_limit"`) {
		t.Errorf("no body_limit matches counted:\n%s", m)
	}
}

// TestWAFBadReloadRefused: a [waf] setting that validation or the rule
// set refuses fails the reload with its key named, and the old config,
// firewall included, keeps serving.
func TestWAFBadReloadRefused(t *testing.T) {
	be := startBackend(t, "app", echoBody)
	e := startEdge(t, wafConfig(be.addr, ""))
	for _, tc := range []struct{ waf, key string }{
		{"[waf]\nparanoia_level = 7\n", "waf.paranoia_level"},
		{"[waf]\nexclude_rules = [942100, 94210]\n", "waf.exclude_rules[1]"},
		{"[[waf.exclusions]]\npath = \"/b/\"\nrules = [1]\n", "waf.exclusions[0].rules[0]"},
	} {
		e.writeConfig(wafConfig(be.addr, tc.waf))
		res, err := e.srv.Reload(TriggerAdmin)
		if res != ReloadFailed || err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("reload with %q: %s %v; want a failure naming %s", tc.waf, res, err, tc.key)
		}
		if resp, _ := e.send(t, e.client, "/b/", attacks[0]); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("after the refused reload the block route answered %d", resp.StatusCode)
		}
		// edge validate finds it too, as nginx -t does.
		if _, err := Validate(e.cfgPath); err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("validate %q: %v; want an error naming %s", tc.waf, err, tc.key)
		}
	}
}

// uploadBoundary is what a browser or wx.uploadFile puts between parts.
const uploadBoundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"

// multipartBody is a multipart/form-data body of the fields, in order,
// then, unless file is nil, a JPEG part holding file.
func multipartBody(t *testing.T, fields [][2]string, file []byte) string {
	t.Helper()
	var b strings.Builder
	mw := multipart.NewWriter(&b)
	if err := mw.SetBoundary(uploadBoundary); err != nil {
		t.Fatal(err)
	}
	for _, f := range fields {
		if err := mw.WriteField(f[0], f[1]); err != nil {
			t.Fatal(err)
		}
	}
	if file != nil {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="file"; filename="wx-photo.jpg"`)
		h.Set("Content-Type", "image/jpeg")
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(file)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// jpegLike is n bytes that start as a JPEG does and go on as a photo's
// compressed data would: every byte value, with quotes, angle brackets,
// SQL and script fragments among them, which the firewall must not match
// (file contents are not ARGS, as with ModSecurity).
func jpegLike(n int) []byte {
	b := append([]byte("\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
		"' OR '1'='1' UNION SELECT password FROM users-- <script>alert(1)</script>"...)
	x := uint32(2463534242)
	for len(b) < n {
		// xorshift32: fixed bytes, test after test, without a seed to manage.
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b = append(b, byte(x))
	}
	return b[:n]
}

// TestWAFMultipart: a multipart/form-data body is inspected as
// ModSecurity's multipart processor inspects it. Its fields, which
// frameworks hand to apps as ordinary parameters (multer, Spring
// @RequestParam, Django request.POST, PHP $_POST), are judged like a
// form's; file contents are not, and count only against the route's
// max_body; the upstream gets the body byte for byte, with or without a
// length. Non-file data over body_limit is refused on a block route, as a
// JSON body over it is.
func TestWAFMultipart(t *testing.T) {
	be := startBackend(t, "app", echoBody)
	e := startEdge(t, wafConfig(be.addr, "\n[waf]\nbody_limit = \"2KB\"\n"))
	ctype := "multipart/form-data; boundary=" + uploadBoundary
	photo := jpegLike(300 << 10) // past what edge holds in memory
	attack := multipartBody(t, [][2]string{
		{"q", "1' UNION SELECT password FROM users--"},
		{"comment", "<script>alert(document.cookie)</script>"},
	}, jpegLike(1<<10))
	benign := multipartBody(t, [][2]string{{"nickname", "小明 ✨"}, {"desc", "生活不止眼前的苟且，还有诗和远方。🎉"}}, photo)
	bigFields := multipartBody(t, [][2]string{{"desc", strings.Repeat("好", 1000)}}, nil)
	overMaxBody := multipartBody(t, [][2]string{{"nickname", "小明"}}, jpegLike(1<<20+1))
	for _, tc := range []struct {
		name, prefix, body string
		status             int
		code               apierror.Code // when refused
	}{
		{"sqli and xss fields", "/b/", attack, http.StatusForbidden, apierror.WAFBlocked},
		{"sqli and xss fields, detect", "/d/", attack, http.StatusOK, 0},
		{"photo and Chinese text", "/b/", benign, http.StatusOK, 0},
		{"fields over body_limit", "/b/", bigFields, http.StatusRequestEntityTooLarge, apierror.BodyTooLarge},
		{"fields over body_limit, detect", "/d/", bigFields, http.StatusOK, 0},
		{"over max_body", "/b/", overMaxBody, http.StatusRequestEntityTooLarge, apierror.BodyTooLarge},
	} {
		for proto, c := range e.clients() {
			for _, streamed := range []bool{false, true} {
				name := fmt.Sprintf("%s %s streamed=%v", tc.name, proto, streamed)
				var body io.Reader = strings.NewReader(tc.body)
				if streamed {
					// No length: chunked over HTTP/1.1, none over HTTP/2.
					body = io.MultiReader(body)
				}
				req, err := http.NewRequest("POST", e.url("api.example.com", tc.prefix+"upload"), body)
				if err != nil {
					t.Fatal(err)
				}
				req.Header = miniProgram(http.Header{"Content-Type": {ctype}})
				before := be.count()
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				reached := be.count() - before
				if resp.StatusCode != tc.status {
					t.Errorf("%s: %d %.100q, want %d", name, resp.StatusCode, got, tc.status)
					continue
				}
				if tc.status == http.StatusOK && (reached != 1 || string(got) != tc.body) {
					t.Errorf("%s: the upstream got %d requests and echoed %d bytes, want 1 and the %d sent, byte for byte", name, reached, len(got), len(tc.body))
				}
				if tc.status != http.StatusOK && (reached != 0 || jsonCode(t, got) != int(tc.code)) {
					t.Errorf("%s: refused with %s and the upstream reached %d times, want code %d and none", name, got, reached, tc.code)
				}
			}
		}
	}
	m := e.metric(t, "edge_waf_rule_matches_total")
	for _, want := range []string{`route="b",rule="942100"`, `route="d",rule="941100"`, `route="b",rule="body_limit"`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, m)
		}
	}
}
