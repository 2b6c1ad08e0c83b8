package waf

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
)

var (
	compiled   = map[string]*Engine{}
	compiledMu sync.Mutex
)

// engine compiles s once per test binary: the rule set takes a while.
func engine(t testing.TB, s Settings) *Engine {
	t.Helper()
	if s.ParanoiaLevel == 0 {
		s.ParanoiaLevel = 1
	}
	if s.AnomalyThreshold == 0 {
		s.AnomalyThreshold = 5
	}
	if s.BodyLimit == 0 {
		s.BodyLimit = 128 << 10
	}
	compiledMu.Lock()
	defer compiledMu.Unlock()
	if e := compiled[s.Key()]; e != nil {
		return e
	}
	e, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	compiled[s.Key()] = e
	return e
}

func request(method, target, ctype, body string) *http.Request {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if body == "" {
		r.Body = http.NoBody
	}
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	r.Header.Set("User-Agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) MicroMessenger/8.0.47")
	r.Header.Set("Accept", "application/json")
	return r
}

// chunked makes r a body of unknown length: the limit is found by reading.
func chunked(r *http.Request) {
	r.ContentLength = -1
	r.TransferEncoding = []string{"chunked"}
}

func TestInspect(t *testing.T) {
	block := engine(t, Settings{Block: true})
	detect := engine(t, Settings{})
	for _, tc := range []struct {
		name   string
		r      func() *http.Request
		action Action
		rule   string // an id among the matches; "" for none at all
	}{
		{"benign GET", func() *http.Request { return request("GET", "/api/goods?page=2&openid=oQ3x05Ab-CdEf_gh12", "", "") }, Pass, ""},
		{"benign JSON", func() *http.Request {
			return request("POST", "/api/order", "application/json", `{"remark":"请尽快发货，谢谢！🎉","openid":"oQ3x05Ab-CdEf_gh12","items":[{"id":3,"n":2}]}`)
		}, Pass, ""},
		{"SQLi in the query", func() *http.Request { return request("GET", "/api/goods?id=1'%20OR%20'1'='1", "", "") }, Block, "942100"},
		{"XSS in the query", func() *http.Request {
			return request("GET", "/api/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "", "")
		}, Block, "941100"},
		{"SQLi in JSON", func() *http.Request {
			return request("POST", "/api/order", "application/json", `{"id":"1 UNION SELECT password FROM users--"}`)
		}, Block, ""},
		{"XSS in a form", func() *http.Request {
			return request("POST", "/api/comment", "application/x-www-form-urlencoded", "text=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E")
		}, Block, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := block.Inspect(tc.r(), "203.0.113.7")
			if v.Action != tc.action {
				t.Fatalf("block engine: action %v, want %v (rules %v)", v.Action, tc.action, v.Rules)
			}
			if tc.action == Pass && len(v.Rules) > 0 {
				t.Errorf("benign request matched %v", v.Rules)
			}
			if tc.rule != "" && !slices.Contains(v.Rules, tc.rule) {
				t.Errorf("rules %v lack %s", v.Rules, tc.rule)
			}
			want := tc.action
			if want == Block {
				want = Detect
			}
			if dv := detect.Inspect(tc.r(), "203.0.113.7"); dv.Action != want || !slices.Equal(dv.Rules, v.Rules) {
				t.Errorf("detect engine: %v %v, want %v %v", dv.Action, dv.Rules, want, v.Rules)
			}
		})
	}
}

// TestInspectKeepsBody: the upstream must get the very bytes the client
// sent, after the firewall read them.
func TestInspectKeepsBody(t *testing.T) {
	e := engine(t, Settings{Block: true, BodyLimit: 64})
	for _, body := range []string{`{"a":"你好"}`, strings.Repeat("x", 64)} {
		r := request("POST", "/api/x", "application/json", body)
		chunked(r)
		e.Inspect(r, "203.0.113.7")
		got, err := io.ReadAll(r.Body)
		if err != nil || string(got) != body {
			t.Errorf("upstream body %q, %v; want %q", got, err, body)
		}
	}
}

func TestBodyLimit(t *testing.T) {
	for _, tc := range []struct {
		block  bool
		length int64 // -1: chunked
		action Action
	}{
		{true, 100, Block}, {true, -1, Block}, {false, 100, Detect}, {false, -1, Detect},
	} {
		e := engine(t, Settings{Block: tc.block, BodyLimit: 64})
		body := `{"a":"` + strings.Repeat("x", 94) + `"}`
		r := request("POST", "/api/x", "application/json", body)
		if r.ContentLength = tc.length; tc.length < 0 {
			chunked(r)
		}
		v := e.Inspect(r, "203.0.113.7")
		if v.Action != tc.action || !v.TooLarge || !slices.Equal(v.Rules, []string{BodyLimitRule}) {
			t.Errorf("block=%v length=%d: %+v", tc.block, tc.length, v)
		}
		if got, _ := io.ReadAll(r.Body); string(got) != body {
			t.Errorf("block=%v chunked: the body read for inspection was lost: %q", tc.block, got)
		}
	}
	// A detect route still judges the URI of a body over the limit.
	r := request("POST", "/api/x?id=1'%20OR%20'1'='1", "application/json", `{"a":"`+strings.Repeat("x", 94)+`"}`)
	if v := engine(t, Settings{BodyLimit: 64}).Inspect(r, "203.0.113.7"); v.Action != Detect || !slices.Contains(v.Rules, "942100") {
		t.Errorf("detect, over the limit, SQLi in the query: %+v", v)
	}
	// An upload is not inspected, whatever its size.
	e := engine(t, Settings{Block: true, BodyLimit: 64})
	r = request("POST", "/api/upload", "multipart/form-data; boundary=x", "--x\r\n"+strings.Repeat("y", 200)+"\r\n--x--\r\n")
	if v := e.Inspect(r, "203.0.113.7"); v.Action != Pass || v.TooLarge {
		t.Errorf("multipart: %+v", v)
	}
}

func TestExclusions(t *testing.T) {
	sqli := func(path string) *http.Request { return request("GET", path+"?id=1'%20OR%20'1'='1", "", "") }
	base := engine(t, Settings{Block: true})
	v := base.Inspect(sqli("/api/a"), "203.0.113.7")
	if v.Action != Block {
		t.Fatalf("without exclusions: %+v", v)
	}
	all := make([]int, 0, len(v.Rules))
	for _, id := range v.Rules {
		n := 0
		for _, c := range id {
			n = n*10 + int(c-'0')
		}
		all = append(all, n)
	}
	byID := engine(t, Settings{Block: true, ExcludeRules: all})
	if v := byID.Inspect(sqli("/api/a"), "203.0.113.7"); v.Action != Pass || len(v.Rules) != 0 {
		t.Errorf("excluded by id: %+v", v)
	}
	byPath := engine(t, Settings{Block: true, Exclusions: []Exclusion{{Path: "/api/search", Rules: all}}})
	if v := byPath.Inspect(sqli("/api/search/q"), "203.0.113.7"); v.Action != Pass {
		t.Errorf("excluded by path: %+v", v)
	}
	if v := byPath.Inspect(sqli("/api/a"), "203.0.113.7"); v.Action != Block {
		t.Errorf("another path: %+v", v)
	}
}

func TestCompileRefusesUnknownRules(t *testing.T) {
	for _, tc := range []struct {
		s   Settings
		key string
	}{
		{Settings{ExcludeRules: []int{942100, 94210}}, "waf.exclude_rules[1]"},
		{Settings{Exclusions: []Exclusion{{Path: "/a", Rules: []int{941100}}, {Path: "/b", Rules: []int{1}}}}, "waf.exclusions[1].rules[0]"},
		{Settings{Exclusions: []Exclusion{{Path: `/a" "id:1`, Rules: []int{941100}}}}, "waf.exclusions[0].path"},
	} {
		tc.s.ParanoiaLevel, tc.s.AnomalyThreshold, tc.s.BodyLimit = 1, 5, 1024
		_, err := Compile(tc.s)
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != tc.key {
			t.Errorf("%+v: error %v, want one at %s", tc.s, err, tc.key)
		}
	}
}

// BenchmarkWAFInspect is the firewall's cost on a request at paranoia
// level 1: a GET with a query and a mini-program JSON POST (both pass),
// and a SQL injection in the query (refused).
func BenchmarkWAFInspect(b *testing.B) {
	e := engine(b, Settings{Block: true})
	body := `{"remark":"请尽快发货，谢谢！🎉","openid":"oQ3x05Ab-CdEf_gh12","items":[{"id":3,"n":2},{"id":9,"n":1}],"address":{"city":"深圳","line":"南山区科技园 1 号"}}`
	for _, bc := range []struct {
		name string
		r    func() *http.Request
		want Action
	}{
		{"GET", func() *http.Request {
			return request("GET", "/api/goods?page=2&size=20&openid=oQ3x05Ab-CdEf_gh12", "", "")
		}, Pass},
		{"JSON", func() *http.Request { return request("POST", "/api/order", "application/json", body) }, Pass},
		{"SQLi", func() *http.Request { return request("GET", "/api/goods?id=1'%20OR%20'1'='1", "", "") }, Block},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if v := e.Inspect(bc.r(), "203.0.113.7"); v.Action != bc.want {
					b.Fatalf("%+v", v)
				}
			}
		})
	}
}

// FuzzInspectKeepsBody: whatever a client sends, Inspect neither panics
// nor changes a byte of the body the upstream reads.
func FuzzInspectKeepsBody(f *testing.F) {
	f.Add("application/json", []byte(`{"a":[1,{"b":"你好"}],"c":null}`), false)
	f.Add("application/json; charset=utf-8", []byte(`{"a":`), true)
	f.Add("application/x-www-form-urlencoded", []byte("a=1&b=%zz&&=c"), false)
	f.Add("application/vnd.api+json", []byte(`[[[[[[[[[[]]]]]]]]]]`), true)
	f.Add("multipart/form-data; boundary=x", []byte("--x\r\n\r\n--x--"), false)
	e := engine(f, Settings{Block: true, BodyLimit: 256})
	f.Fuzz(func(t *testing.T, ctype string, body []byte, unknownLength bool) {
		r := request("POST", "/api/x", "", string(body))
		r.Header["Content-Type"] = []string{ctype}
		if unknownLength {
			chunked(r)
		}
		e.Inspect(r, "203.0.113.7")
		got, err := io.ReadAll(r.Body)
		if err != nil || string(got) != string(body) {
			t.Fatalf("upstream body %q, %v; want %q", got, err, body)
		}
	})
}
