package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// answersDir holds what the answer keys refer to: a bcrypt htpasswd file,
// an MD5 one, an error page and the testDir files.
func answersDir(t *testing.T) string {
	t.Helper()
	dir := testDir(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"htpasswd":     "# ops\nalice:" + string(hash) + "\n",
		"md5.htpasswd": "bob:$apr1$xyz$0123456789abcdefghijkl\n",
		"50x.html":     "<h1>later</h1>",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func answersRoute(lines ...string) string {
	return withA(append([]string{`[[routes]]`, `name = "r"`, `upstream = "a"`}, lines...)...)
}

func TestAnswersKeys(t *testing.T) {
	dir := answersDir(t)
	cfg := mustParse(t, dir, answersRoute(
		`compress = ["br", "zstd", "gzip"]`,
		`cors = { origins = ["https://h5.example.com", "*.example.com"], credentials = true }`,
		`auth_basic = { user_file = "htpasswd" }`,
		`error_pages = [{ status = [502, 503], file = "50x.html" }, { status = [404], body = "{}", content_type = "application/json" }]`,
	))
	r := cfg.Routes[0]
	if got := r.Encodings(); !slices.Equal(got, []string{"br", "zstd", "gzip"}) {
		t.Errorf("encodings %q", got)
	}
	if !slices.Equal(r.CORS.Methods, corsDefaultMethods) || r.CORS.MaxAge.Std() != 10*time.Minute {
		t.Errorf("cors defaults: methods %q, max_age %v", r.CORS.Methods, r.CORS.MaxAge)
	}
	if r.AuthBasic.UserFile != filepath.Join(dir, "htpasswd") || r.AuthBasic.Realm != "restricted" {
		t.Errorf("auth_basic: %+v (the file is relative to the config's directory)", r.AuthBasic)
	}
	if p := r.ErrorPages[0]; p.File != filepath.Join(dir, "50x.html") || !strings.HasPrefix(p.ContentType, "text/html") {
		t.Errorf("error page: %+v", p)
	}
	gz := mustParse(t, dir, answersRoute(`gzip = true`, `methods = ["get"]`, `cors = { origins = ["*"] }`))
	if got := gz.Routes[0].Encodings(); !slices.Equal(got, []string{"gzip"}) {
		t.Errorf("gzip = true: encodings %q", got)
	}
	if got := gz.Routes[0].CORS.Methods; !slices.Equal(got, []string{"GET"}) {
		t.Errorf("cors methods default to the route's: %q", got)
	}
	if got := gz.Routes[0].Methods; !slices.Equal(got, []string{"GET", "OPTIONS"}) {
		t.Errorf("a cors route's methods %q must take OPTIONS, or preflights never reach it", got)
	}
}

func TestAnswersProblems(t *testing.T) {
	dir := answersDir(t)
	tests := []struct {
		name  string
		lines []string
		key   string
		want  string
	}{
		{"unknown coding", []string{`compress = ["brotli"]`}, "routes[0].compress[0]", `"br"`},
		{"coding twice", []string{`compress = ["gzip", "gzip"]`}, "routes[0].compress[1]", "listed twice"},
		{"gzip and compress", []string{`gzip = true`, `compress = ["br"]`}, "routes[0].gzip", `list "gzip" in compress`},
		{"precompressed proxy", []string{`precompressed = true`}, "routes[0].precompressed", "only applies to static"},
		{"no origins", []string{`cors = { credentials = true }`}, "routes[0].cors.origins", "is missing"},
		{"origin with path", []string{`cors = { origins = ["https://a.example.com/app"] }`}, "routes[0].cors.origins[0]", "not a scheme and host"},
		{"bare wildcard", []string{`cors = { origins = ["https://*.com"] }`}, "routes[0].cors.origins[0]", "wildcard"},
		{"star with credentials", []string{`cors = { origins = ["*"], credentials = true }`}, "routes[0].cors.origins[0]", "credentials"},
		{"negative max age", []string{`cors = { origins = ["*"], max_age = "-1s" }`}, "routes[0].cors.max_age", ""},
		{"missing user file", []string{`auth_basic = { user_file = "nope" }`}, "routes[0].auth_basic.user_file", "cannot read"},
		{"md5 hashes", []string{`auth_basic = { user_file = "md5.htpasswd" }`}, "routes[0].auth_basic.user_file", "htpasswd -B"},
		{"auth_basic with token", []string{`auth = "token"`, `auth_basic = { user_file = "htpasswd" }`}, "routes[0].auth_basic", "both read the Authorization header"},
		{"page status", []string{`error_pages = [{ status = [200], body = "x" }]`}, "routes[0].error_pages[0].status[0]", "not an error status"},
		{"page twice", []string{`error_pages = [{ status = [502], body = "x" }, { status = [502], body = "y" }]`}, "routes[0].error_pages[1].status[0]", "already has a page"},
		{"page file and body", []string{`error_pages = [{ status = [502], body = "x", file = "50x.html" }]`}, "routes[0].error_pages[0]", "file and body"},
		{"page neither", []string{`error_pages = [{ status = [502] }]`}, "routes[0].error_pages[0]", "needs file"},
		{"page missing file", []string{`error_pages = [{ status = [502], file = "gone.html" }]`}, "routes[0].error_pages[0].file", "cannot read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, e := parseIn(t, dir, answersRoute(tt.lines...))
			wantProblemAt(t, e, tt.key, tt.want)
		})
	}
}
