package config

import (
	"mime"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"edge/internal/answer"
)

// RouteAnswers are a route's keys for what the client is answered: the
// codings it is compressed with, CORS, basic authentication and error
// pages, inlined among the route's keys:
//
//	[[routes]]
//	compress   = ["br", "zstd", "gzip"]
//	cors       = { origins = ["https://h5.example.com", "https://*.example.com"] }
//	auth_basic = { user_file = "htpasswd" }
//	error_pages = [{ status = [502, 503, 504], file = "50x.html" }]
type RouteAnswers struct {
	// Compress lists the codings offered, the preferred first: "br",
	// "zstd", "gzip". The client's Accept-Encoding weights choose; the
	// order breaks ties. gzip = true is compress = ["gzip"].
	Compress []string `toml:"compress"`
	// Precompressed serves file.br or file.gz beside a static file when the
	// client accepts it (nginx gzip_static, brotli_static).
	Precompressed bool        `toml:"precompressed"`
	CORS          *CORS       `toml:"cors"`
	AuthBasic     *AuthBasic  `toml:"auth_basic"`
	ErrorPages    []ErrorPage `toml:"error_pages"`
}

// CORS answers cross-origin requests from an allow-list of origins.
type CORS struct {
	// Origins: "https://h5.example.com", "https://*.example.com" (any
	// subdomain), or "*" (any, without credentials). No scheme means https.
	Origins []string `toml:"origins"`
	// Methods sent in preflight answers. Default: the route's methods, or
	// GET, HEAD, POST, PUT, PATCH, DELETE.
	Methods []string `toml:"methods"`
	// Headers sent in preflight answers. Default: the headers the preflight
	// asks for.
	Headers       []string `toml:"headers"`
	ExposeHeaders []string `toml:"expose_headers"`
	Credentials   bool     `toml:"credentials"`
	MaxAge        Duration `toml:"max_age"` // default 10m
}

// AuthBasic asks for HTTP basic credentials listed in an htpasswd file of
// bcrypt hashes (nginx auth_basic, auth_basic_user_file).
type AuthBasic struct {
	UserFile string `toml:"user_file"` // relative to the config file's directory
	Realm    string `toml:"realm"`     // default "restricted"
	// ForwardAuthorization passes the Authorization header to the upstream;
	// by default edge removes it once checked.
	ForwardAuthorization bool `toml:"forward_authorization"`
}

// ErrorPage replaces the route's answers of some statuses (nginx
// error_page) with a file or a fixed body.
type ErrorPage struct {
	Status      []int  `toml:"status"`
	File        string `toml:"file"` // relative to the config file's directory
	Body        string `toml:"body"`
	ContentType string `toml:"content_type"` // default by the file's extension, or text/html
}

// maxErrorPage bounds a page held in memory for every route using it.
const maxErrorPage = 1 << 20

var corsDefaultMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}

func (r *Route) validateAnswers(c *checker, key string) {
	seen := make(map[string]bool)
	for i, name := range r.Compress {
		k := indexKey(key+".compress", i)
		if !c.oneOf(k, name, "br", "zstd", "gzip") {
			continue
		}
		if seen[name] {
			c.add(k, "%q is listed twice; list each coding once", name)
		}
		seen[name] = true
	}
	if r.Gzip && c.has(key+".compress") {
		c.add(key+".gzip", `is compress = ["gzip"]; remove it and list "gzip" in compress`)
	}
	if r.Precompressed && r.Static == "" {
		c.add(key+".precompressed", "only applies to static routes; remove it")
	}
	if r.CORS != nil {
		r.CORS.validate(c, key+".cors", r.Methods)
		// A preflight is an OPTIONS request: a route limited to other
		// methods would never see it, and the browser would get a 404.
		if len(r.Methods) > 0 && !slices.Contains(r.Methods, "OPTIONS") {
			r.Methods = append(r.Methods, "OPTIONS")
		}
	}
	if r.AuthBasic != nil {
		r.AuthBasic.validate(c, key+".auth_basic")
		if r.Auth != "" && r.Auth != AuthNone && r.Auth != AuthTrustedHeader {
			c.add(key+".auth_basic", "cannot be combined with auth = %q: both read the Authorization header; protect the route with one of them", r.Auth)
		}
	}
	statuses := make(map[int]int)
	for i := range r.ErrorPages {
		r.ErrorPages[i].validate(c, indexKey(key+".error_pages", i), statuses, i)
	}
}

func (o *CORS) validate(c *checker, key string, routeMethods []string) {
	if len(o.Origins) == 0 {
		c.add(key+".origins", `is missing; list the origins allowed, like ["https://h5.example.com", "https://*.example.com"]`)
	}
	for i, origin := range o.Origins {
		k := indexKey(key+".origins", i)
		if origin == "*" {
			if o.Credentials {
				c.add(k, `"*" cannot be used with credentials = true (browsers refuse it); list the origins`)
			}
			continue
		}
		if _, _, _, err := answer.ParseOrigin(origin); err != nil {
			c.add(k, "%v", err)
		}
	}
	if len(o.Methods) == 0 {
		o.Methods = slices.Clone(routeMethods)
		if len(o.Methods) == 0 {
			o.Methods = slices.Clone(corsDefaultMethods)
		}
	}
	for i, m := range o.Methods {
		if !validToken(m) {
			c.add(indexKey(key+".methods", i), `%q is not an HTTP method; write methods like ["GET", "POST"]`, m)
		}
		o.Methods[i] = strings.ToUpper(m)
	}
	checkHeaderList(c, key+".headers", o.Headers)
	checkHeaderList(c, key+".expose_headers", o.ExposeHeaders)
	if !c.has(key + ".max_age") {
		o.MaxAge = Duration(10 * time.Minute)
	} else if o.MaxAge < 0 {
		c.add(key+".max_age", `must be 0 or more, like "10m"`)
	}
}

func (a *AuthBasic) validate(c *checker, key string) {
	if a.Realm == "" {
		a.Realm = "restricted"
	}
	if strings.ContainsAny(a.Realm, "\"\\\r\n") {
		c.add(key+".realm", "%q must not hold quotes, backslashes or line breaks", a.Realm)
	}
	c.resolve(&a.UserFile)
	before := len(c.problems)
	checkReadable(c, key+".user_file", a.UserFile, "an htpasswd file of bcrypt hashes (htpasswd -B)")
	if len(c.problems) > before {
		return
	}
	data, err := os.ReadFile(a.UserFile)
	if err == nil {
		_, err = answer.ParseHtpasswd(data)
	}
	if err != nil {
		c.add(key+".user_file", "%s: %v", a.UserFile, err)
	}
}

func (p *ErrorPage) validate(c *checker, key string, seen map[int]int, i int) {
	if len(p.Status) == 0 {
		c.add(key+".status", "is missing; list the statuses this page answers, like [502, 503, 504]")
	}
	for j, s := range p.Status {
		k := indexKey(key+".status", j)
		if s < 400 || s > 599 {
			c.add(k, "%d is not an error status; write codes from 400 to 599, like 502", s)
			continue
		}
		if prev, dup := seen[s]; dup {
			c.add(k, "%d already has a page in error_pages[%d]; give each status one page", s, prev)
		}
		seen[s] = i
	}
	switch {
	case p.File != "" && c.has(key+".body"):
		c.add(key, "has file and body; give one of them")
	case p.File != "":
		c.resolve(&p.File)
		checkReadable(c, key+".file", p.File, "the page")
		if st, err := os.Stat(p.File); err == nil && st.Size() > maxErrorPage {
			c.add(key+".file", "%q is %d bytes; a page is held in memory and may be at most 1 MiB", p.File, st.Size())
		}
		if p.ContentType == "" {
			p.ContentType = mime.TypeByExtension(filepath.Ext(p.File))
		}
	case c.has(key + ".body"):
		if len(p.Body) > maxErrorPage {
			c.add(key+".body", "is %d bytes; a page may be at most 1 MiB", len(p.Body))
		}
	default:
		c.add(key, `needs file = "50x.html" or body = "..."`)
	}
	if p.ContentType == "" {
		p.ContentType = "text/html; charset=utf-8"
	}
	if _, _, err := mime.ParseMediaType(p.ContentType); err != nil {
		c.add(key+".content_type", "%q is not a media type, like \"text/html; charset=utf-8\"", p.ContentType)
	}
}

// Encodings returns the codings the route compresses with, nil for none.
func (r *Route) Encodings() []string {
	if r.Gzip && len(r.Compress) == 0 {
		return []string{"gzip"}
	}
	return r.Compress
}
