package proxy

import (
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"edge/internal/apierror"
	"edge/internal/reqctx"
)

// StaticOptions configures a static file handler.
type StaticOptions struct {
	// Root is the absolute directory served. It is opened again for every
	// request, so a deploy that swaps a symlink or renames a release
	// directory into place is picked up without a reload.
	Root string
	// Index is the file served for a directory. Default "index.html".
	Index string
	// SPA serves Root's index for missing paths whose last segment has no
	// dot (page routes like /users/42); missing assets (/app.js, /logo.png)
	// still get 404 so a broken build is not hidden behind an HTML page.
	SPA bool
	// StripPrefix is removed from the request path before the file is
	// looked up. A request outside the prefix gets 404.
	StripPrefix string
	// Precompressed serves name.br or name.gz beside a file, when present
	// and the client accepts the coding, instead of the file itself
	// (nginx gzip_static and brotli_static).
	Precompressed bool
}

// staticMethodNotAllowed keeps edge's own answers in the spec's JSON shape for
// a status the spec has no code for; its first three digits give 405.
const staticMethodNotAllowed apierror.Code = 40501

type staticHandler struct {
	root   string
	index  string
	spa    bool
	prefix string
	// precompressed: the codings looked for beside a file, in preference
	// order; nil when the route does not serve precompressed files.
	precompressed []Encoding
}

// staticPrecompressed: brotli first, the smaller of the two on the same input.
var staticPrecompressed = []Encoding{EncodingBrotli, EncodingGzip}

var staticSuffixes = [...]string{EncodingGzip: ".gz", EncodingBrotli: ".br"}

// NewStatic returns a handler serving the files under opts.Root for GET and
// HEAD. Nothing outside Root is ever served: names are resolved with
// os.Root, so "..", absolute paths and symlinks leading out are refused.
// Hidden files and directories (any segment starting with ".", such as
// .git or .env) are not served, except .well-known. Directories are never
// listed.
func NewStatic(opts StaticOptions) (http.Handler, error) {
	if !filepath.IsAbs(opts.Root) {
		return nil, fmt.Errorf("static root %q: must be an absolute path", opts.Root)
	}
	fi, err := os.Stat(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("static root: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("static root %q: not a directory", opts.Root)
	}
	index := opts.Index
	if index == "" {
		index = "index.html"
	}
	if strings.ContainsAny(index, "/\\\x00") || index[0] == '.' {
		return nil, fmt.Errorf("static index %q: must be a plain file name that does not start with a dot", index)
	}
	prefix := strings.TrimRight(opts.StripPrefix, "/")
	if prefix != "" && prefix[0] != '/' {
		return nil, fmt.Errorf("static strip prefix %q: must start with /", opts.StripPrefix)
	}
	s := &staticHandler{root: opts.Root, index: index, spa: opts.SPA, prefix: prefix}
	if opts.Precompressed {
		s.precompressed = staticPrecompressed
	}
	return s, nil
}

func (s *staticHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header()["Allow"] = []string{"GET, HEAD"}
		staticRefuse(w, r, staticMethodNotAllowed, "method_not_allowed", "method not allowed")
		return
	}
	upath := r.URL.Path
	if s.prefix != "" {
		rest, ok := strings.CutPrefix(upath, s.prefix)
		if !ok || (rest != "" && rest[0] != '/') {
			s.notFound(w, r)
			return
		}
		if rest == "" {
			rest = "/"
		}
		upath = rest
	}
	// %2F and %5C decode to separators, so a name made of them would not be
	// the one the client's path segments describe; refuse rather than guess.
	if staticEncodedSeparator(r.URL.RawPath) {
		s.notFound(w, r)
		return
	}
	name, ok := staticName(upath)
	if !ok {
		s.notFound(w, r)
		return
	}
	root, err := os.OpenRoot(s.root)
	if err != nil {
		s.notFound(w, r)
		return
	}
	defer root.Close()

	f, fi, err := staticOpen(root, name, true)
	switch {
	case err != nil:
		// Only a plain miss gets the SPA index: a symlink out of the root
		// or a file used as a directory stays a 404.
		if !s.spa || !errors.Is(err, fs.ErrNotExist) || !staticLooksLikePage(name) {
			break
		}
		name = s.index
		f, fi, err = staticOpen(root, name, false)
	case fi.IsDir():
		f.Close()
		if !strings.HasSuffix(r.URL.Path, "/") {
			staticRedirectToDir(w, r)
			return
		}
		// A directory without an index is a 404 even for SPA routes: no
		// listing, and the client asked for something that exists.
		name = staticJoinIndex(name, s.index)
		f, fi, err = staticOpen(root, name, false)
	case strings.HasSuffix(upath, "/"):
		// A file asked for as a directory would break the page's relative
		// links; nginx answers 404 too.
		f.Close()
		err = fs.ErrNotExist
	}
	if err != nil {
		s.notFound(w, r)
		return
	}
	defer f.Close()

	ctype := staticContentType(name)
	if s.precompressed != nil {
		// The answer depends on Accept-Encoding whichever file is chosen.
		gzipAddVary(w.Header())
		if enc := Negotiate(r.Header["Accept-Encoding"], s.precompressed); enc != EncodingNone {
			if cf, cfi, err := staticOpen(root, name+staticSuffixes[enc], false); err == nil {
				defer cf.Close()
				if ctype == "" {
					// Sniffing would see the compressed bytes.
					if ctype = mime.TypeByExtension(filepath.Ext(name)); ctype == "" {
						ctype = "application/octet-stream"
					}
				}
				w.Header()["Content-Encoding"] = []string{enc.String()}
				f, fi = cf, cfi
			}
		}
	}
	// One allocation for the three values; the capacity limits keep an
	// Add on one header from writing over the next.
	vals := make([]string, 3)
	vals[0], vals[1], vals[2] = staticETag(fi), "nosniff", ctype
	h := w.Header()
	h["Etag"] = vals[0:1:1]
	h["X-Content-Type-Options"] = vals[1:2:2]
	if vals[2] != "" {
		h["Content-Type"] = vals[2:3:3]
	}
	http.ServeContent(w, r, name, fi.ModTime(), f)
}

func (s *staticHandler) notFound(w http.ResponseWriter, r *http.Request) {
	staticRefuse(w, r, apierror.NotFound, "not_found", "not found")
}

func staticRefuse(w http.ResponseWriter, r *http.Request, code apierror.Code, reason, msg string) {
	if info := reqctx.FromRequest(r); info != nil {
		info.Reason = reason
	}
	apierror.Write(w, r, code, msg)
}

// staticOpen opens name and returns it only if it is a regular file (or a
// directory when dirOK): devices, sockets and pipes are reported as missing.
func staticOpen(root *os.Root, name string, dirOK bool) (*os.File, fs.FileInfo, error) {
	// O_NONBLOCK so that a FIFO left in the root fails the type check
	// below instead of blocking the request until a writer appears; it
	// changes nothing for regular files and directories.
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat %q: %w", name, err)
	}
	if !fi.Mode().IsRegular() && !(dirOK && fi.IsDir()) {
		f.Close()
		return nil, nil, fs.ErrNotExist
	}
	return f, fi, nil
}

func staticJoinIndex(dir, index string) string {
	if dir == "." {
		return index
	}
	return dir + "/" + index
}

// staticRedirectToDir sends /dir to /dir/ as nginx does, keeping the query. The
// path was checked by staticName, so it holds no empty segment and cannot
// turn into a scheme-relative "//host" Location.
func staticRedirectToDir(w http.ResponseWriter, r *http.Request) {
	loc := r.URL.EscapedPath() + "/"
	if r.URL.RawQuery != "" {
		loc += "?" + r.URL.RawQuery
	}
	w.Header()["Location"] = []string{loc}
	w.WriteHeader(http.StatusMovedPermanently)
}

// staticName turns a decoded URL path into a name inside the root, or
// reports false when the path must be refused: not absolute, an empty
// segment other than a trailing slash, a segment starting with a dot other
// than .well-known (this covers "." and ".." as well as hidden files), a
// backslash or a NUL byte. "/" names the root itself, ".".
func staticName(upath string) (string, bool) {
	if upath == "" || upath[0] != '/' {
		return "", false
	}
	name := strings.TrimSuffix(upath[1:], "/")
	if name == "" {
		if len(upath) > 1 {
			return "", false
		}
		return ".", true
	}
	start := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) {
			switch name[i] {
			case 0, '\\':
				return "", false
			case '/':
			default:
				continue
			}
		}
		seg := name[start:i]
		if seg == "" || (seg[0] == '.' && seg != ".well-known") {
			return "", false
		}
		start = i + 1
	}
	return name, true
}

// staticEncodedSeparator reports whether the raw path holds %2F or %5C in any
// letter case.
func staticEncodedSeparator(raw string) bool {
	for i := strings.IndexByte(raw, '%'); i >= 0 && i+2 < len(raw); {
		if (raw[i+1] == '2' && (raw[i+2] == 'f' || raw[i+2] == 'F')) ||
			(raw[i+1] == '5' && (raw[i+2] == 'c' || raw[i+2] == 'C')) {
			return true
		}
		next := strings.IndexByte(raw[i+1:], '%')
		if next < 0 {
			break
		}
		i += 1 + next
	}
	return false
}

// staticLooksLikePage reports whether a missing name should get the SPA index:
// its last segment has no dot, so it is a route, not a missing asset.
func staticLooksLikePage(name string) bool {
	return !strings.Contains(name[strings.LastIndexByte(name, '/')+1:], ".")
}

// staticETag is strong, from the modification time in nanoseconds and the
// size, like nginx's but finer than a second, so two deploys within one
// second with equal sizes still differ.
func staticETag(fi fs.FileInfo) string {
	var buf [40]byte
	b := append(buf[:0], '"')
	b = strconv.AppendInt(b, fi.ModTime().UnixNano(), 16)
	b = append(b, '-')
	b = strconv.AppendInt(b, fi.Size(), 16)
	b = append(b, '"')
	return string(b)
}

// staticWebTypes fixes the types of the files a front end ships. The mime
// package lets the host's /etc/mime.types override its own table, so
// without this a .js file could be served as application/javascript on one
// host and text/javascript on another; other extensions still go to the
// mime package and then to sniffing inside http.ServeContent.
var staticWebTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".htm":         "text/html; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".mjs":         "text/javascript; charset=utf-8",
	".json":        "application/json",
	".map":         "application/json",
	".webmanifest": "application/manifest+json",
	".txt":         "text/plain; charset=utf-8",
	".xml":         "application/xml",
	".svg":         "image/svg+xml",
	".wasm":        "application/wasm",
	".png":         "image/png",
	".jpg":         "image/jpeg",
	".jpeg":        "image/jpeg",
	".gif":         "image/gif",
	".webp":        "image/webp",
	".avif":        "image/avif",
	".ico":         "image/x-icon",
	".woff":        "font/woff",
	".woff2":       "font/woff2",
	".ttf":         "font/ttf",
	".otf":         "font/otf",
	".pdf":         "application/pdf",
	".mp4":         "video/mp4",
	".webm":        "video/webm",
	".mp3":         "audio/mpeg",
}

func staticContentType(name string) string {
	ext := filepath.Ext(name)
	if len(ext) > 16 {
		return ""
	}
	var buf [16]byte
	lower := buf[:len(ext)]
	for i := 0; i < len(ext); i++ {
		c := ext[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	return staticWebTypes[string(lower)]
}
