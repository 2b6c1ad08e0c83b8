package config

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// want is one expected problem: its key path, its line, and a fragment of
// its message.
type want struct {
	key  string
	line int
	msg  string
}

// wantProblems checks that e holds exactly the wanted problems, in order.
func wantProblems(t *testing.T, e *Error, ws []want) {
	t.Helper()
	if e == nil {
		t.Fatalf("no problems, want %d", len(ws))
	}
	ok := len(e.Problems) == len(ws)
	for i := 0; ok && i < len(ws); i++ {
		p, w := e.Problems[i], ws[i]
		ok = p.Key == w.key && p.Line == w.line && strings.Contains(p.Msg, w.msg)
	}
	if !ok {
		var b strings.Builder
		for _, w := range ws {
			fmt.Fprintf(&b, "  %d: %s: ...%s...\n", w.line, w.key, w.msg)
		}
		t.Errorf("got:\n%v\nwant:\n%s", e, b.String())
	}
	for _, p := range e.Problems {
		line := fmt.Sprintf("%s:%d: %s: ", e.File, p.Line, p.Key)
		if !slices.ContainsFunc(strings.Split(e.Error(), "\n"), func(l string) bool { return strings.HasPrefix(l, line) }) {
			t.Errorf("Error() has no line starting %q", line)
		}
	}
}

// wantProblemAt checks that e holds a problem at key, with a line, whose
// message contains msg; other problems may come with it.
func wantProblemAt(t *testing.T, e *Error, key, msg string) {
	t.Helper()
	if e == nil {
		t.Fatal("no problems")
	}
	for _, p := range e.Problems {
		if p.Key == key && strings.Contains(p.Msg, msg) {
			if p.Line == 0 {
				t.Errorf("problem %v has no line", p)
			}
			return
		}
	}
	t.Fatalf("no problem at %s containing %q in:\n%v", key, msg, e)
}

// upstreamA is a valid upstream for route cases, on lines 1-3.
var upstreamA = []string{`[[upstreams]]`, `name = "a"`, `targets = ["127.0.0.1:3000"]`}

func withA(lines ...string) string { return doc(append(slices.Clone(upstreamA), lines...)...) }

func TestProblems(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []want
	}{
		// Decoding.
		{"unknown key with suggestion", doc(`[server]`, `listen_htps = ":443"`),
			[]want{{"server.listen_htps", 2, `unknown key; did you mean "listen_https"?`}}},
		{"unknown key lists keys", doc(`[log]`, `colour = "x"`),
			[]want{{"log.colour", 2, `the keys allowed here are "level", "format", "access"`}}},
		{"unknown section", doc(`[sever]`, `x = 1`),
			[]want{{"sever", 1, `did you mean "server"?`}}},
		{"unknown key in inline route", withA(`[[routes]]`, `name = "r"`, `upstream = "a"`, `respond = { stauts = 200 }`),
			[]want{
				{"routes[0]", 4, "has upstream and respond"},
				{"routes[0].respond.stauts", 7, `did you mean "status"?`},
			}},
		{"string for integer", withA(`keepalive = "64"`),
			[]want{{"upstreams[0].keepalive", 4, "must be an integer, not a string"}}},
		{"float for integer", withA(`retries = 1.5`),
			[]want{{"upstreams[0].retries", 4, "must be an integer, not a float"}}},
		{"integer for duration", doc(`[server]`, `read_timeout = 30`),
			[]want{{"server.read_timeout", 2, `must be a string with a unit, like "10s"`}}},
		{"bad duration", doc(`[server]`, `read_timeout = "30"`),
			[]want{{"server.read_timeout", 2, `"30" is not a duration`}}},
		{"negative duration", doc(`[server]`, `idle_timeout = "-1s"`),
			[]want{{"server.idle_timeout", 2, "is negative"}}},
		{"shutdown delay", doc(`[server]`, `shutdown_grace = "5s"`, `shutdown_delay = "soon"`),
			[]want{{"server.shutdown_delay", 3, `"soon" is not a duration`}}},
		{"negative shutdown delay", doc(`[server]`, `shutdown_delay = "-5s"`),
			[]want{{"server.shutdown_delay", 2, "is negative"}}},
		{"bad size", doc(`[server]`, `max_header_bytes = "lots"`),
			[]want{{"server.max_header_bytes", 2, `"lots" is not a size`}}},
		{"negative size", withA(`[[routes]]`, `name = "r"`, `upstream = "a"`, `max_body = -1`),
			[]want{{"routes[0].max_body", 7, "must be 0 or more, not -1"}}},
		{"string for bool", doc(`[log]`, `access = "yes"`),
			[]want{{"log.access", 2, "must be true or false, not a string"}}},
		{"negative max_inflight_per_ip", withA(`[[routes]]`, `name = "r"`, `upstream = "a"`, `max_inflight_per_ip = -1`),
			[]want{{"routes[0].max_inflight_per_ip", 7, "-1 is negative; write 0 for no cap"}}},
		{"bad access_fields", doc(`[log]`, `access_fields = ["time", "stauts", "time"]`),
			[]want{
				{"log.access_fields[1]", 2, `"stauts" is not valid (did you mean "status"?)`},
				{"log.access_fields[2]", 2, `"time" is listed twice`},
			}},
		{"access_format and access_fields", doc(`[log]`, `access_fields = ["time"]`, `access_format = '$remote_addr "$request"'`),
			[]want{{"log.access_format", 3, "and access_fields both say what a line holds"}}},
		{"access_format variables", doc(`[log]`, `access_format = '$remote_addr $http_authorization'`),
			[]want{{"log.access_format", 2, "$http_authorization is not a variable edge knows; use one of args, body_bytes_sent"}}},
		{"access_format dollar", doc(`[log]`, `access_format = '$status costs 5$'`),
			[]want{{"log.access_format", 2, "a $ at byte 15 is followed by no variable name; write $$ for a dollar sign"}}},
		{"no access_fields", doc(`[log]`, `access_fields = []`),
			[]want{{"log.access_fields", 2, "is empty"}}},
		{"empty mask_query name", doc(`[log]`, `mask_query = ["code", ""]`),
			[]want{{"log.mask_query[1]", 2, `is empty; remove it`}}},
		{"string for array", withA(`[[routes]]`, `name = "r"`, `upstream = "a"`, `hosts = "a.com"`),
			[]want{{"routes[0].hosts", 7, "must be an array"}}},
		{"string for table", doc(`[[routes]]`, `name = "r"`, `respond = "ok"`),
			[]want{{"routes[0].respond", 3, "must be a table"}}},
		{"date for string", doc(`[log]`, `level = 2024-01-01`),
			[]want{{"log.level", 2, "must be a string, not a date/time"}}},
		{"bad cidr", doc(`[server]`, `trusted_proxies = [`, `  "10.0.0.0/33",`, `  "1.2.3.4",`, `  "nope",`, `]`),
			[]want{
				{"server.trusted_proxies[0]", 3, `"10.0.0.0/33" is not an IP address or CIDR`},
				{"server.trusted_proxies[2]", 5, `"nope" is not an IP address or CIDR`},
			}},
		{"bad target type", doc(`[[upstreams]]`, `name = "a"`, `targets = [3000]`),
			[]want{{"upstreams[0].targets[0]", 3, `must be a string like "127.0.0.1:3000" or a table like { address`}}},

		// Server.
		{"listen addresses", doc(`[server]`, `listen_https = "off"`, `listen_http = "8080"`, `listen_admin = ":99999"`),
			[]want{
				{"server.listen_https", 2, `cannot be "off"`},
				{"server.listen_http", 3, `"8080" is not host:port`},
				{"server.listen_admin", 4, "the port must be a number from 1 to 65535"},
			}},
		{"listen host", doc(`[server]`, `listen_admin = "local_host:9180"`),
			[]want{{"server.listen_admin", 2, `has host "local_host"`}}},
		{"shared listen address", doc(`[server]`, `listen_https = ":8443"`, `listen_http = ":8443"`),
			[]want{{"server.listen_http", 3, "each listener needs its own address"}}},
		{"empty state dir", doc(`[server]`, `state_dir = ""`),
			[]want{{"server.state_dir", 2, `leave it out to use "edge-state"`}}},
		{"zero header timeout and size", doc(`[server]`, `read_header_timeout = "0s"`, `max_header_bytes = 0`),
			[]want{
				{"server.read_header_timeout", 2, "must be more than 0"},
				{"server.max_header_bytes", 3, "must be more than 0"},
			}},

		// TLS, log, cluster.
		{"tls enums", doc(`[tls]`, `mode = "file"`, `min_version = "1.1"`),
			[]want{
				{"tls.mode", 2, `"file" is not valid (did you mean "files"?); must be one of "internal", "files", "acme"`},
				{"tls.min_version", 3, `must be one of "1.2", "1.3"`},
			}},
		{"files mode without certificates", doc(`[tls]`, `mode = "files"`),
			[]want{{"tls.mode", 2, `needs at least one certificate; add [[tls.certificates]]`}}},
		{"certificates in internal mode", doc(`[tls]`, `certificates = [{ cert = "cert.pem", key = "key.pem" }]`),
			[]want{{"tls.certificates", 2, `are only used with tls.mode = "files" or "acme"`}}},
		{"acme keys are checked", doc(`[tls]`, `email = "ops@example.com"`),
			[]want{{"tls.email", 2, `is only used with tls.mode = "acme"`}}},
		{"certificate files", doc(`[tls]`, `mode = "files"`, `[[tls.certificates]]`, `cert = "missing.pem"`, `key = "site"`, `[[tls.certificates]]`, `key = "key.pem"`),
			[]want{
				{"tls.certificates[0].cert", 4, "no such file or directory"},
				{"tls.certificates[0].key", 5, "is not a regular file"},
				{"tls.certificates[1].cert", 6, "is missing; write the path to the PEM certificate chain"},
			}},
		{"tls hosts", doc(`[tls]`, `hosts = ["ok.test", "bad host"]`),
			[]want{{"tls.hosts[1]", 2, `"bad host" is not a host name or IP address`}}},
		{"log enums", doc(`[log]`, `level = "warning"`, `format = "logfmt"`),
			[]want{
				{"log.level", 2, `(did you mean "warn"?)`},
				{"log.format", 3, `must be one of "json", "text"`},
			}},

		// Upstreams.
		{"upstream names", doc(
			`[[upstreams]]`, `targets = ["127.0.0.1:1"]`,
			`[[upstreams]]`, `name = "a b"`, `targets = ["127.0.0.1:1"]`,
			`[[upstreams]]`, `name = "x"`, `targets = ["127.0.0.1:1"]`,
			`[[upstreams]]`, `name = "x"`, `targets = ["127.0.0.1:1"]`),
			[]want{
				{"upstreams[0].name", 1, "is missing; every upstream needs a unique name"},
				{"upstreams[1].name", 4, `"a b" may only hold letters`},
				{"upstreams[3].name", 10, `"x" is already the name of the upstream on line 7`},
			}},
		{"targets", doc(`[[upstreams]]`, `name = "a"`, `targets = [`,
			`  "http://10.0.0.1:80/",`,
			`  "10.0.0.2",`,
			`  { address = ":80" },`,
			`  { address = "10.0.0.3:0", weight = 0 },`,
			`  "bad_host:80",`,
			`]`),
			[]want{
				{"upstreams[0].targets[0]", 4, `has a scheme; write host:port only, like "10.0.0.1:80"`},
				{"upstreams[0].targets[1]", 5, `"10.0.0.2" is not host:port`},
				{"upstreams[0].targets[2].address", 6, `":80" is not host:port`},
				{"upstreams[0].targets[3].address", 7, "the port must be a number from 1 to 65535"},
				{"upstreams[0].targets[3].weight", 7, "must be 1 or more, not 0"},
				{"upstreams[0].targets[4]", 8, `has host "bad_host"`},
			}},
		{"unix socket targets", doc(`[[upstreams]]`, `name = "a"`, `targets = ["unix:/run/app.sock", "unix:app.sock"]`,
			`[[upstreams]]`, `name = "b"`, `tls = true`, `targets = ["unix:/run/b.sock"]`),
			[]want{
				{"upstreams[0].targets[1]", 3, `"unix:app.sock": a Unix socket target is "unix:" and the socket's absolute path`},
				{"upstreams[1].targets[0]", 7, "is a Unix socket, which has no host name to check the certificate for; set tls_server_name"},
			}},
		{"no targets", doc(`[[upstreams]]`, `name = "a"`),
			[]want{{"upstreams[0].targets", 1, "needs at least one target"}}},
		{"balance and hash key", withA(`balance = "random"`, `hash_key = "cookie"`),
			[]want{
				{"upstreams[0].balance", 4, `"random" is not valid`},
				{"upstreams[0].hash_key", 5, `only used with balance = "hash"`},
				{"upstreams[0].hash_key", 5, `write "ip" or "header:<Name>"`},
			}},
		{"hash header name", withA(`balance = "hash"`, `hash_key = "header:X User"`),
			[]want{{"upstreams[0].hash_key", 5, `"header:X User" is not valid`}}},
		{"negative counts", withA(`keepalive = -1`, `retries = -2`),
			[]want{
				{"upstreams[0].keepalive", 4, "must be 0 or more, not -1"},
				{"upstreams[0].retries", 5, "must be 0 or more, not -2; 0 disables retries"},
			}},
		{"retry_on", withA(`retry_on = [503, 404]`, `retry_timeout = "-1s"`, `[[upstreams]]`, `name = "b"`, `targets = ["127.0.0.1:1"]`, `retries = 0`, `retry_on = [502]`),
			[]want{
				{"upstreams[0].retry_on[1]", 4, "404 cannot be retried"},
				{"upstreams[0].retry_timeout", 5, "is negative"},
				{"upstreams[1].retry_on", 10, "is never used with retries = 0"},
			}},
		{"only backups", doc(`[[upstreams]]`, `name = "a"`, `targets = [{ address = "127.0.0.1:1", backup = true }]`),
			[]want{{"upstreams[0].targets", 3, "are all backups"}}},
		{"tls keys without tls", withA(`tls_ca = "ca.pem"`, `tls_server_name = "api.internal"`),
			[]want{
				{"upstreams[0].tls_ca", 4, "is only used with tls = true"},
				{"upstreams[0].tls_server_name", 5, "is only used with tls = true"},
			}},
		{"tls files", withA(`tls = true`, `tls_ca = "missing.pem"`, `tls_client_cert = "cert.pem"`, `tls_server_name = "not a name"`),
			[]want{
				{"upstreams[0].tls_ca", 5, `cannot read`},
				{"upstreams[0].tls_client_cert", 6, "needs tls_client_key"},
				{"upstreams[0].tls_server_name", 7, `"not a name" is not a host name`},
			}},
		{"read timeouts", withA(`read_timeout = "0s"`, `[[upstreams]]`, `name = "b"`, `targets = ["127.0.0.1:1"]`, `read_timeout = "soon"`,
			`[[routes]]`, `name = "r"`, `upstream = "a"`, `upstream_read_timeout = "0s"`,
			`[[routes]]`, `name = "s"`, `path = "/s"`, `respond = {}`, `upstream_read_timeout = "5m"`),
			[]want{
				{"upstreams[0].read_timeout", 4, `must be more than 0, like "60s"`},
				{"upstreams[1].read_timeout", 8, `"soon" is not a duration`},
				{"routes[0].upstream_read_timeout", 12, "must be more than 0"},
				{"routes[1].upstream_read_timeout", 17, "only applies to routes with an upstream"},
			}},
		{"health check", withA(`[upstreams.health_check]`, `path = "healthz"`, `interval = "0s"`, `timeout = "0s"`,
			`healthy_threshold = 0`, `unhealthy_threshold = 0`, `expect_status = [200, 99, 600]`),
			[]want{
				{"upstreams[0].health_check.path", 5, `"healthz" must start with "/"`},
				{"upstreams[0].health_check.interval", 6, "must be more than 0"},
				{"upstreams[0].health_check.timeout", 7, "must be more than 0"},
				{"upstreams[0].health_check.healthy_threshold", 8, "must be 1 or more, not 0"},
				{"upstreams[0].health_check.unhealthy_threshold", 9, "must be 1 or more, not 0"},
				{"upstreams[0].health_check.expect_status[1]", 10, "99 is not an HTTP status"},
				{"upstreams[0].health_check.expect_status[2]", 10, "600 is not an HTTP status"},
			}},
		{"health check without path", withA(`health_check = { interval = "1s" }`),
			[]want{{"upstreams[0].health_check.path", 4, "runs only when path is set"}}},
		{"passive health", withA(`passive_health = { max_fails = -1 }`, `[[upstreams]]`, `name = "b"`, `targets = ["127.0.0.1:1"]`,
			`passive_health = { window = "0s", cooldown = "0s" }`),
			[]want{
				{"upstreams[0].passive_health.max_fails", 4, "must be 0 or more, not -1"},
				{"upstreams[1].passive_health.window", 8, "must be more than 0"},
				{"upstreams[1].passive_health.cooldown", 8, "must be more than 0"},
			}},

		// Routes.
		{"route names", withA(`[[routes]]`, `upstream = "a"`, `[[routes]]`, `name = "r"`, `upstream = "a"`, `path = "/x"`,
			`[[routes]]`, `name = "r"`, `upstream = "a"`, `path = "/y"`),
			[]want{
				{"routes[0].name", 4, "is missing; every route needs a unique name"},
				{"routes[2].name", 11, `"r" is already the name of the route on line 7`},
			}},
		{"no handler", doc(`[[routes]]`, `name = "r"`),
			[]want{{"routes[0]", 1, "needs one of upstream, static, respond or redirect"}}},
		{"three handlers", withA(`[[routes]]`, `name = "r"`, `upstream = "a"`, `static = "site"`, `respond = {}`),
			[]want{{"routes[0]", 4, "has upstream and static and respond; a route takes exactly one"}}},
		{"missing upstream with list", withA(`[[routes]]`, `name = "r"`, `upstream = "aa"`),
			[]want{{"routes[0].upstream", 6, `no upstream named "aa"; define it under [[upstreams]] or use one of: "a"`}}},
		{"missing upstream none defined", doc(`[[routes]]`, `name = "r"`, `upstream = "api"`),
			[]want{{"routes[0].upstream", 3, "none are defined yet"}}},
		{"static dir", doc(`[[routes]]`, `name = "r"`, `static = "nope"`, `[[routes]]`, `name = "f"`, `path = "/f"`, `static = "file.txt"`,
			`[[routes]]`, `name = "e"`, `path = "/e"`, `static = ""`),
			[]want{
				{"routes[0].static", 3, "no such file or directory; create it or fix the path"},
				{"routes[1].static", 7, "is not a directory"},
				{"routes[2].static", 11, "must name a directory"},
			}},
		{"respond status", doc(`[[routes]]`, `name = "r"`, `respond = { status = 42 }`),
			[]want{{"routes[0].respond.status", 3, "42 is not an HTTP status"}}},
		{"hosts", withA(`[[routes]]`, `name = "r"`, `upstream = "a"`, `hosts = [`,
			`  "API.example.com",`,
			`  "https://b.example.com/",`,
			`  "c.example.com:443",`,
			`  "d.example.com/x",`,
			`  "*.*.example.com",`,
			`  "*.example.com",`,
			`  "127.0.0.1",`,
			`]`),
			[]want{
				{"routes[0].hosts[0]", 8, `must be lowercase; write "api.example.com"`},
				{"routes[0].hosts[1]", 9, `has a scheme; write the host name only, like "b.example.com"`},
				{"routes[0].hosts[2]", 10, `has a port; write "c.example.com"`},
				{"routes[0].hosts[3]", 11, "has a path"},
				{"routes[0].hosts[4]", 12, "is not a host name"},
			}},
		{"path", withA(`[[routes]]`, `name = "r"`, `upstream = "a"`, `path = "api"`,
			`[[routes]]`, `name = "q"`, `upstream = "a"`, `path = "/api?x=1"`),
			[]want{
				{"routes[0].path", 7, `"api" must start with "/"`},
				{"routes[1].path", 11, "without query"},
			}},
		{"methods", withA(`[[routes]]`, `name = "r"`, `upstream = "a"`, `methods = ["GET", "BAD METHOD"]`),
			[]want{{"routes[0].methods[1]", 7, `"BAD METHOD" is not an HTTP method`}}},
		{"options for other handlers", withA(
			`[[routes]]`, `name = "s"`, `static = "site"`, `strip_prefix = true`, `websocket = true`,
			`[[routes]]`, `name = "u"`, `upstream = "a"`, `path = "/u"`, `spa = true`, `index = "home.html"`),
			[]want{
				{"routes[0].strip_prefix", 7, "only applies to routes with an upstream"},
				{"routes[0].websocket", 8, "only applies to routes with an upstream"},
				{"routes[1].spa", 13, "only applies to static routes"},
				{"routes[1].index", 14, "only applies to static routes"},
			}},
		{"index file name", doc(`[[routes]]`, `name = "s"`, `static = "site"`, `index = "a/b.html"`),
			[]want{{"routes[0].index", 4, "must be a file name"}}},
		{"headers", withA(`[[routes]]`, `name = "r"`, `upstream = "a"`,
			`set_request_headers = { "X Bad" = "1", "X-Ok" = "1" }`,
			`set_response_headers = { "X-Split" = "a\r\nInjected: 1" }`,
			`remove_request_headers = ["Cookie", "Bad:"]`,
			`remove_response_headers = [""]`),
			[]want{
				{"routes[0].set_request_headers.X Bad", 7, `"X Bad" is not a valid header name`},
				{"routes[0].set_response_headers.X-Split", 8, "has a line break"},
				{"routes[0].remove_request_headers[1]", 9, `"Bad:" is not a valid header name`},
				{"routes[0].remove_response_headers[0]", 10, `"" is not a valid header name`},
			}},
		{"duplicate match", withA(
			`[[routes]]`, `name = "r1"`, `upstream = "a"`, `hosts = ["a.test", "b.test"]`, `methods = ["get", "POST"]`,
			`[[routes]]`, `name = "r2"`, `upstream = "a"`, `hosts = ["b.test", "a.test"]`, `methods = ["POST", "GET"]`,
			`[[routes]]`, `name = "r3"`, `upstream = "a"`, `hosts = ["b.test", "a.test"]`, `methods = ["POST"]`),
			[]want{{"routes[1]", 9, `matches the same hosts, path and methods as routes[0] ("r1", line 4)`}}},
		{"two of path, exact and regex", withA(`[[routes]]`, `name = "r"`, `upstream = "a"`, `path = "/a"`, `regex = "^/a"`,
			`[[routes]]`, `name = "q"`, `upstream = "a"`, `exact = "/q"`, `regex = "^/q"`),
			[]want{
				{"routes[0].regex", 8, "exactly one of path (a prefix), exact (the whole path) or regex, and this one has path and regex"},
				{"routes[1].regex", 13, "this one has exact and regex"},
			}},
		{"bad regex", withA(`[[routes]]`, `name = "r"`, `upstream = "a"`, `regex = "^/(?!admin)"`, `regex_ignore_case = true`,
			`[[routes]]`, `name = "q"`, `upstream = "a"`, `exact = "healthz"`, `before_regex = true`),
			[]want{
				{"routes[0].regex", 7, `"^/(?!admin)" is not a valid regular expression (Go RE2 syntax; no look-around or backreferences): invalid or unsupported Perl syntax`},
				{"routes[1].exact", 12, `"healthz" must start with "/"`},
				{"routes[1].before_regex", 13, "only applies to path (prefix) routes"},
			}},
		{"rewrite", withA(`[[routes]]`, `name = "r"`, `upstream = "a"`, `regex = "^/v1/"`, `rewrite = { from = "^/v1/(.*)$", to = "/api/$1/$2" }`,
			`[[routes]]`, `name = "q"`, `upstream = "a"`, `rewrite = { from = "^/(", to = "/x" }`,
			`[[routes]]`, `name = "s"`, `upstream = "a"`, `path = "/s"`, `rewrite = { from = "^/s", to = "s/$hostx" }`,
			`[[routes]]`, `name = "t"`, `upstream = "a"`, `exact = "/t"`, `strip_prefix = true`,
			`[[routes]]`, `name = "u"`, `respond = {}`, `exact = "/u"`, `rewrite = { from = "^/u", to = "/v" }`,
			`[[routes]]`, `name = "v"`, `upstream = "a"`, `exact = "/v"`, `rewrite = { from = "^/v", to = "/w%3B" }`),
			[]want{
				{"routes[0].rewrite.to", 8, `"/api/$1/$2" uses $2, but rewrite.from has only 1 group(s)`},
				{"routes[1].rewrite.from", 12, `"^/(" is not a valid regular expression`},
				{"routes[2].rewrite.to", 17, `"s/$hostx" must be a path starting with "/"`},
				{"routes[3].strip_prefix", 22, "only applies to path (prefix) routes; use rewrite"},
				{"routes[4].rewrite", 27, "only applies to routes with an upstream"},
				{"routes[5].rewrite.to", 32, `"/w%3B" holds ';', '\' or a broken %-escape`},
			}},
		{"redirect", withA(`[[routes]]`, `name = "r"`, `regex = "^/old/(\\d+)$"`, `redirect = { to = "https://new.example.com/$1/$2", status = 303 }`,
			`[[routes]]`, `name = "q"`, `path = "/q"`, `redirect = { to = "/n/$1" }`,
			`[[routes]]`, `name = "s"`, `exact = "/s"`, `redirect = { to = "new.example.com$uri" }`,
			`[[routes]]`, `name = "t"`, `exact = "/t"`, `redirect = { to = "/$scheme" }`, `upstream = "a"`),
			[]want{
				{"routes[0].redirect.status", 7, "303 is not a redirect status edge sends"},
				{"routes[0].redirect.to", 7, `uses $2, but the route's regex has only 1 group(s)`},
				{"routes[1].redirect.to", 11, `uses $1, but a route without regex = ... has no groups`},
				{"routes[2].redirect.to", 15, `must be a path ("/new/$1") or an http:// or https:// URL`},
				{"routes[3]", 16, "has upstream and redirect; a route takes exactly one"},
				{"routes[3].redirect.to", 19, `unknown variable "$scheme"`},
			}},
		{"type error does not cascade", withA(`[[routes]]`, `name = "r"`, `upstream = 5`),
			[]want{{"routes[0].upstream", 6, "must be a string, not an integer"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, e := parseIn(t, testDir(t), tc.text)
			wantProblems(t, e, tc.want)
		})
	}
}

func TestSecretsDoNotPrint(t *testing.T) {
	c := Cluster{Redis: "redis://:topsecret@x:6379"}
	for _, s := range []string{fmt.Sprint(c.Redis), fmt.Sprintf("%+v %#v %s", c, c, c.Redis)} {
		if strings.Contains(s, "topsecret") {
			t.Errorf("secret printed: %s", s)
		}
	}
}

// TestRouteMatchKinds: exact and regex routes drop path's default "/", so
// they match only what they say; a redirect defaults to 302; two regex
// routes that differ only in case-sensitivity are different routes.
func TestRouteMatchKinds(t *testing.T) {
	cfg, e := parseIn(t, testDir(t), withA(
		`[[routes]]`, `name = "p"`, `upstream = "a"`,
		`[[routes]]`, `name = "e"`, `upstream = "a"`, `exact = "/healthz"`,
		`[[routes]]`, `name = "r"`, `upstream = "a"`, `regex = '^/v(\d+)/users/(\d+)$'`, `rewrite = { from = '^/v(\d+)/(.*)$', to = "/api/$2?v=$1" }`,
		`[[routes]]`, `name = "ri"`, `upstream = "a"`, `regex = '^/v(\d+)/users/(\d+)$'`, `regex_ignore_case = true`,
		`[[routes]]`, `name = "old"`, `regex = '^/old/(.*)$'`, `redirect = { to = "https://new.example.com/$1" }`))
	if e != nil {
		t.Fatal(e)
	}
	rs := cfg.Routes
	if rs[0].Path != "/" || rs[1].Path != "" || rs[2].Path != "" {
		t.Errorf("paths %q %q %q, want \"/\" \"\" \"\"", rs[0].Path, rs[1].Path, rs[2].Path)
	}
	if rs[3].RegexSource() != `(?i)^/v(\d+)/users/(\d+)$` {
		t.Errorf("regex source %q", rs[3].RegexSource())
	}
	if rs[4].Redirect.Status != 302 {
		t.Errorf("redirect status %d, want 302", rs[4].Redirect.Status)
	}
}
