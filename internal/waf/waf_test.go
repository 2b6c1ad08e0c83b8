package waf

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
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
	// A multipart body its caller did not store is held to the limit
	// whole, as a JSON body is: padding must not carry a field through.
	e := engine(t, Settings{Block: true, BodyLimit: 64})
	body, ctype := form([][2]string{{"a", strings.Repeat("y", 200)}}, nil)
	r = request("POST", "/api/upload", ctype, body)
	if v := e.Inspect(r, "203.0.113.7"); v.Action != Block || !v.TooLarge {
		t.Errorf("multipart, not stored: %+v", v)
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
// level 1: a GET with a query, a mini-program JSON POST and a photo
// upload (all pass), and a SQL injection in the query (refused).
func BenchmarkWAFInspect(b *testing.B) {
	e := engine(b, Settings{Block: true})
	// wx.uploadFile's photo (100KB, past what Coraza holds in memory) with
	// two form fields.
	upload, uploadType := form([][2]string{{"nickname", "小明 ✨"}, {"desc", "生活不止眼前的苟且"}}, append(append([]byte{}, photo...), make([]byte, 100<<10)...))
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
		{"Multipart", func() *http.Request { return storedRequest(uploadType, upload) }, Pass},
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
// nor changes a byte of the body the upstream reads, stored (as the
// gateway stores a multipart body) or not.
func FuzzInspectKeepsBody(f *testing.F) {
	f.Add("application/json", []byte(`{"a":[1,{"b":"你好"}],"c":null}`), false, false)
	f.Add("application/json; charset=utf-8", []byte(`{"a":`), true, false)
	f.Add("application/x-www-form-urlencoded", []byte("a=1&b=%zz&&=c"), false, false)
	f.Add("application/vnd.api+json", []byte(`[[[[[[[[[[]]]]]]]]]]`), true, false)
	f.Add("multipart/form-data; boundary=x", []byte("--x\r\n\r\n--x--"), false, false)
	f.Add("multipart/form-data; boundary=x", []byte("--x\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n"+strings.Repeat("\xff", 300)+"\r\n--x--\r\n"), false, true)
	f.Add("text/xml", []byte("<a b='1'><![CDATA[x]]></a>"), true, true)
	e := engine(f, Settings{Block: true, BodyLimit: 256})
	f.Fuzz(func(t *testing.T, ctype string, body []byte, unknownLength, store bool) {
		r := request("POST", "/api/x", "", string(body))
		r.Header["Content-Type"] = []string{ctype}
		if unknownLength {
			chunked(r)
		}
		if store {
			r.Body = stored{bytes.NewReader(body)}
		}
		e.Inspect(r, "203.0.113.7")
		got, err := io.ReadAll(r.Body)
		if err != nil || string(got) != string(body) {
			t.Fatalf("upstream body %q, %v; want %q", got, err, body)
		}
	})
}

// form is a multipart/form-data body of the fields, then a file part
// holding file when it is not nil, and its content type.
func form(fields [][2]string, file []byte) (body, ctype string) {
	var b strings.Builder
	mw := multipart.NewWriter(&b)
	_ = mw.SetBoundary("----WebKitFormBoundary7MA4YWxkTrZu0gW")
	for _, f := range fields {
		_ = mw.WriteField(f[0], f[1])
	}
	if file != nil {
		w, _ := mw.CreateFormFile("file", "wx-photo.jpg")
		_, _ = w.Write(file)
	}
	_ = mw.Close()
	return b.String(), mw.FormDataContentType()
}

// photo is a JPEG's start and bytes an attack rule would match, which in
// a file's contents it must not.
var photo = []byte("\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01' OR '1'='1' UNION SELECT password FROM users-- <script>alert(1)</script>\xff\xd9")

// TestInspectMultipart: the fields of a multipart body are judged as a
// form's are, whatever the framework behind calls them; file contents
// are not judged, and the upstream gets the body as sent.
func TestInspectMultipart(t *testing.T) {
	block := engine(t, Settings{Block: true})
	for _, tc := range []struct {
		name   string
		fields [][2]string
		file   []byte
		action Action
		rule   string
	}{
		{"SQLi field", [][2]string{{"q", "1' UNION SELECT password FROM users--"}}, nil, Block, "942100"},
		{"XSS field", [][2]string{{"nickname", "小明"}, {"comment", "<script>alert(document.cookie)</script>"}}, photo, Block, "941100"},
		{"photo and Chinese text", [][2]string{{"nickname", "小明 ✨"}, {"desc", "生活不止眼前的苟且，还有诗和远方。"}}, photo, Pass, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, ctype := form(tc.fields, tc.file)
			r := request("POST", "/api/upload", ctype, body)
			v := block.Inspect(r, "203.0.113.7")
			if v.Action != tc.action || (tc.rule != "" && !slices.Contains(v.Rules, tc.rule)) || (tc.action == Pass && len(v.Rules) > 0) {
				t.Errorf("%+v, want %v with %q", v, tc.action, tc.rule)
			}
			if got, err := io.ReadAll(r.Body); err != nil || string(got) != body {
				t.Errorf("upstream body %d bytes, %v; want the %d sent", len(got), err, len(body))
			}
		})
	}
}

// stored is a body held whole, as the gateway's spool holds one.
type stored struct{ *bytes.Reader }

func (stored) Close() error { return nil }

func (s stored) Rewind() error {
	_, err := s.Seek(0, io.SeekStart)
	return err
}

func storedRequest(ctype, body string) *http.Request {
	r := request("POST", "/api/upload", ctype, body)
	r.Body = stored{bytes.NewReader([]byte(body))}
	return r
}

// TestInspectStoredMultipart: a stored multipart body is inspected whole;
// its files count against nothing here (the route's max_body bounds
// them), the rest of its bytes against the limit (ModSecurity's
// SecRequestBodyNoFilesLimit), and the upstream reads it from its start.
func TestInspectStoredMultipart(t *testing.T) {
	const limit = 1024
	big := append(append([]byte{}, photo...), bytes.Repeat([]byte("\x00\xff<'\""), 2000)...)
	for _, tc := range []struct {
		name     string
		block    bool
		fields   [][2]string
		file     []byte
		action   Action
		tooLarge bool
		rule     string
	}{
		{"a file past the limit", true, [][2]string{{"nickname", "小明 ✨"}}, big, Pass, false, ""},
		{"SQLi field after a file past the limit", true, [][2]string{{"q", "1' UNION SELECT password FROM users--"}}, big, Block, false, "942100"},
		{"fields past the limit", true, [][2]string{{"desc", strings.Repeat("好", 400)}}, photo, Block, true, BodyLimitRule},
		{"fields past the limit, detect", false, [][2]string{{"desc", strings.Repeat("好", 400)}}, photo, Detect, true, BodyLimitRule},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, ctype := form(tc.fields, tc.file)
			r := storedRequest(ctype, body)
			v := engine(t, Settings{Block: tc.block, BodyLimit: limit}).Inspect(r, "203.0.113.7")
			if v.Action != tc.action || v.TooLarge != tc.tooLarge || (tc.rule != "" && !slices.Contains(v.Rules, tc.rule)) || (tc.action == Pass && len(v.Rules) > 0) {
				t.Errorf("%+v, want %v tooLarge=%v with %q", v, tc.action, tc.tooLarge, tc.rule)
			}
			if got, err := io.ReadAll(r.Body); err != nil || string(got) != body {
				t.Errorf("upstream body %d bytes, %v; want the %d sent", len(got), err, len(body))
			}
		})
	}
}

// TestInspectBodyKinds: every body type CRS lets through is inspected,
// however its content type is written, and a body its parser gives up
// on is refused: the app's parser may read on where Coraza's stopped.
func TestInspectBodyKinds(t *testing.T) {
	block := engine(t, Settings{Block: true})
	sqli := "1' UNION SELECT password FROM users--"
	multi, multiType := form([][2]string{{"q", sqli}}, nil)
	for _, tc := range []struct {
		name, ctype, body string
		action            Action
		rule              string
	}{
		{"XML", "application/xml", "<order><q>" + sqli + "</q></order>", Block, "942100"},
		{"SOAP", "application/soap+xml; charset=utf-8", "<Envelope><Body><q>" + sqli + "</q></Body></Envelope>", Block, "942100"},
		// mime.ParseMediaType refuses it; Gin's binding, among others, reads
		// JSON all the same.
		{"JSON, unclosed quote in charset", `application/json; charset="utf-8`, `{"q":"` + sqli + `"}`, Block, "942100"},
		{"JSON, upper case", "Application/JSON", `{"q":"` + sqli + `"}`, Block, "942100"},
		{"multipart/mixed", strings.Replace(multiType, "form-data", "mixed", 1), multi, Block, "942100"},
		{"JSON with trailing bytes", "application/json", `{"n":1} {"q":"` + sqli + `"}`, Block, "200002"},
		{"multipart, malformed part", "multipart/form-data; boundary=x", "--x\r\n" + strings.Repeat("y", 200) + "\r\n--x--\r\n", Block, "200003"},
		{"XML, benign", "text/xml", "<xml><ToUserName><![CDATA[gh_123]]></ToUserName><Content><![CDATA[你好]]></Content></xml>", Pass, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := storedRequest(tc.ctype, tc.body)
			v := block.Inspect(r, "203.0.113.7")
			if v.Action != tc.action || (tc.rule != "" && !slices.Contains(v.Rules, tc.rule)) || (tc.action == Pass && len(v.Rules) > 0) {
				t.Errorf("%+v, want %v with %q", v, tc.action, tc.rule)
			}
			if got, err := io.ReadAll(r.Body); err != nil || string(got) != tc.body {
				t.Errorf("upstream body %q, %v", got, err)
			}
		})
	}
	// Excluded as any rule is, for an app that takes such bodies.
	lenient := engine(t, Settings{Block: true, ExcludeRules: []int{200002}})
	if v := lenient.Inspect(storedRequest("application/json", `{"n":1} trailing`), "203.0.113.7"); v.Action != Pass {
		t.Errorf("200002 excluded: %+v", v)
	}
}

// TestInspectLeavesNoFiles: what Coraza writes to disk for a multipart
// body (its body buffer past the in-memory limit, a copy of each file
// part) is gone once Inspect returns.
func TestInspectLeavesNoFiles(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir) // read by Coraza when it is compiled and when it writes
	e, err := Compile(Settings{Block: true, ParanoiaLevel: 1, AnomalyThreshold: 5, BodyLimit: 1024})
	if err != nil {
		t.Fatal(err)
	}
	body, ctype := form([][2]string{{"nickname", "小明"}}, append(append([]byte{}, photo...), make([]byte, 64<<10)...))
	if v := e.Inspect(storedRequest(ctype, body), "203.0.113.7"); v.Action != Pass {
		t.Fatalf("%+v", v)
	}
	if left, err := os.ReadDir(dir); err != nil || len(left) != 0 {
		t.Errorf("left in TMPDIR: %v %v", left, err)
	}
}
