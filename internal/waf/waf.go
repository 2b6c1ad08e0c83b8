// Package waf owns the web application firewall: the OWASP Core Rule Set
// compiled by Coraza into an engine, once per distinct setting, and the
// inspection of one request (its URI, headers and a JSON, form, XML or
// multipart body) against it.
package waf

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental"
	"github.com/corazawaf/coraza/v3/types"
)

// Settings are what an engine is compiled from. Routes whose settings are
// equal share one engine: the Core Rule Set costs megabytes and a fraction
// of a second to compile.
type Settings struct {
	// Block refuses a request whose anomaly score reaches the threshold;
	// false only records it (ModSecurity SecRuleEngine DetectionOnly).
	Block bool
	// ParanoiaLevel is CRS's blocking paranoia level, 1 to 4.
	ParanoiaLevel int
	// AnomalyThreshold is the inbound anomaly score at which a request is
	// refused (CRS scores a critical match 5).
	AnomalyThreshold int
	// BodyLimit is the most body bytes read for inspection: of a JSON,
	// form or XML body, and of a multipart body less its files' contents
	// (SecRequestBodyNoFilesLimit). A larger body is refused in block mode
	// (SecRequestBodyLimitAction Reject).
	BodyLimit int64
	// ExcludeRules are rule ids removed everywhere (SecRuleRemoveById).
	ExcludeRules []int
	// Exclusions remove rules for paths under a prefix.
	Exclusions []Exclusion
}

// Exclusion removes rules for requests whose path starts with Path
// (ctl:ruleRemoveById in a rule on REQUEST_FILENAME "@beginsWith").
type Exclusion struct {
	Path  string
	Rules []int
}

// Key identifies settings that compile to the same engine.
func (s Settings) Key() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%t/%d/%d/%d/%v", s.Block, s.ParanoiaLevel, s.AnomalyThreshold, s.BodyLimit, s.ExcludeRules)
	for _, e := range s.Exclusions {
		fmt.Fprintf(&b, "/%q=%v", e.Path, e.Rules)
	}
	return b.String()
}

// Engine is one compiled rule set. It is immutable and safe for
// concurrent use; each request gets its own transaction.
type Engine struct {
	waf       coraza.WAF
	block     bool
	bodyLimit int64
}

// KeyError is a setting the rule set refused, named by its key in the
// config's [waf] section, which Settings mirrors field for field.
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// exclusionBaseID numbers the path exclusions' rules in the range
// ModSecurity leaves to local rules (1-99999), clear of CRS's 9xxxxx.
const exclusionBaseID = 10000

// Compile builds an engine from s. Ids in exclusions that the Core Rule
// Set does not have are an error: a typo would otherwise exclude nothing
// and the false positive it was meant to end would go on.
func Compile(s Settings) (*Engine, error) {
	engine := "DetectionOnly"
	if s.Block {
		engine = "On"
	}
	var d strings.Builder
	// Inspect limits what reaches Coraza itself: JSON, form and XML bodies
	// up to the limit, held in memory; multipart bodies whole (files
	// included) when their other bytes fit the limit, so Coraza's
	// whole-body limit is its largest and what passes the in-memory limit
	// goes to its temporary files, as the file parts do. The REST methods
	// are allowed (CRS's default refuses PUT, PATCH and DELETE, rule
	// 911100): mini-program APIs use them, and a route's methods key is
	// where edge restricts methods.
	//
	// The body processors are selected as in ModSecurity's recommended
	// configuration (200000, 200001, 200006), and multipart for every
	// multipart type, not only form-data (200007): Spring's multipart
	// resolver, for one, takes any multipart/ type as a form by default. A body its processor
	// cannot parse (200002) or a multipart body that fails strict
	// validation (200003) scores as a critical attack instead of
	// ModSecurity's outright deny, so detect mode records it as it records
	// the rest: what a parser gave up on is the rest of the body unseen,
	// which the app's more lenient parser may still read (Go's JSON
	// decoder stops after the first value; multipart parsers differ in
	// what they accept).
	fmt.Fprintf(&d, `SecRuleEngine %s
SecRequestBodyAccess On
SecRequestBodyLimit %[5]d
SecRequestBodyInMemoryLimit %[2]d
SecRequestBodyLimitAction Reject
SecRequestBodyJsonDepthLimit 1024
SecResponseBodyAccess Off
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "^application/[a-z0-9.-]+[+]json" "id:200006,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "^multipart/" "id:200007,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=MULTIPART"
SecRule REQBODY_ERROR "!@eq 0" "id:%[6]d,phase:2,t:none,pass,log,severity:CRITICAL,msg:'Failed to parse request body',setvar:'tx.inbound_anomaly_score_pl1=+%%{tx.critical_anomaly_score}'"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:%[7]d,phase:2,t:none,pass,log,severity:CRITICAL,msg:'Multipart request body failed strict validation',setvar:'tx.inbound_anomaly_score_pl1=+%%{tx.critical_anomaly_score}'"
SecAction "id:900000,phase:1,pass,t:none,nolog,setvar:tx.blocking_paranoia_level=%[3]d"
SecAction "id:900110,phase:1,pass,t:none,nolog,setvar:tx.inbound_anomaly_score_threshold=%[4]d"
SecAction "id:900200,phase:1,pass,t:none,nolog,setvar:'tx.allowed_methods=GET HEAD POST OPTIONS PUT PATCH DELETE'"
`, engine, s.BodyLimit, s.ParanoiaLevel, s.AnomalyThreshold, maxStored, bodyErrorRule, multipartErrorRule)
	for i, e := range s.Exclusions {
		if strings.ContainsAny(e.Path, "\"'\\ \t\r\n") {
			return nil, &KeyError{Key: exclusionKey(i, "path"), Err: fmt.Errorf("%q must not hold quotes, backslashes or spaces", e.Path)}
		}
		fmt.Fprintf(&d, `SecRule REQUEST_FILENAME "@beginsWith %s" "id:%d,phase:1,pass,t:none,nolog`, e.Path, exclusionBaseID+i)
		for _, id := range e.Rules {
			fmt.Fprintf(&d, ",ctl:ruleRemoveById=%d", id)
		}
		d.WriteString("\"\n")
	}
	d.WriteString("Include @crs-setup.conf.example\nInclude @owasp_crs/REQUEST-*.conf\n")
	for _, id := range s.ExcludeRules {
		fmt.Fprintf(&d, "SecRuleRemoveById %d\n", id)
	}
	known := make(map[int]bool, 700)
	cfg := coraza.NewWAFConfig().WithRootFS(coreruleset.FS).WithDirectives(d.String())
	cfg = experimental.WAFConfigWithRuleObserver(cfg, func(r types.RuleMetadata) { known[r.ID()] = true })
	w, err := coraza.NewWAF(cfg)
	if err != nil {
		return nil, fmt.Errorf("compiling the core rule set: %w", err)
	}
	for i, id := range s.ExcludeRules {
		if !known[id] {
			return nil, &KeyError{Key: "waf.exclude_rules[" + strconv.Itoa(i) + "]", Err: unknownRule(id)}
		}
	}
	for i, e := range s.Exclusions {
		for j, id := range e.Rules {
			if !known[id] {
				return nil, &KeyError{Key: exclusionKey(i, "rules[") + strconv.Itoa(j) + "]", Err: unknownRule(id)}
			}
		}
	}
	return &Engine{waf: w, block: s.Block, bodyLimit: s.BodyLimit}, nil
}

func exclusionKey(i int, field string) string {
	return "waf.exclusions[" + strconv.Itoa(i) + "]." + field
}

func unknownRule(id int) error {
	return fmt.Errorf("%d is not a rule of the OWASP Core Rule Set %s; copy the id from the access log's waf_rules", id, CRSVersion)
}

// CRSVersion is the Core Rule Set edge embeds.
const CRSVersion = "v4.25.0"

// Action is what the firewall did with a request.
type Action uint8

const (
	// Pass: the score stayed under the threshold (rules may have matched).
	Pass Action = iota
	// Detect: the request would have been refused; detect mode let it on.
	Detect
	// Block: the request was refused.
	Block
)

// String is the action's word in the access log and metrics.
func (a Action) String() string {
	switch a {
	case Detect:
		return "detect"
	case Block:
		return "block"
	}
	return "pass"
}

// Verdict is the outcome of one inspection.
type Verdict struct {
	Action Action
	// Rules are the ids of the attack rules that matched, in order, after
	// BodyLimitRule when the body was over the limit.
	Rules []string
	// TooLarge is set when the body was over the limit: refused with 413
	// rather than 403, as ModSecurity's Reject does.
	TooLarge bool
}

// BodyLimitRule stands in Verdict.Rules for a body larger than the
// engine inspects.
const BodyLimitRule = "body_limit"

// The rules edge adds that score a body the rule set could not read
// (ModSecurity's recommended 200002 and 200003); they are reported with
// CRS's attack rules.
const (
	bodyErrorRule      = 200002
	multipartErrorRule = 200003
)

// maxStored bounds the multipart body Coraza takes (its own bound on
// SecRequestBodyLimit); one this large is treated as over the limit.
const maxStored = 1 << 30

// Stored is a request body its owner has read whole and kept (the
// gateway's spool: in memory, then an unlinked temporary file), so that
// the firewall can read it through and give it back from its start.
type Stored interface {
	io.ReadCloser
	// Rewind makes the next Read start again at the body's first byte.
	Rewind() error
}

// StoresWhole reports whether a body with this header is inspected
// whole, files included: a multipart body. The caller stores it (Stored)
// before Inspect; one it does not store is inspected only when all of it
// fits the limit, as a JSON body is.
func StoresWhole(h http.Header) bool {
	return kindOf(h["Content-Type"]) == multipartBody
}

// Inspect runs r through the rule set. client is the client's address.
// A JSON, form or XML body is read up to the limit, a Stored multipart
// body whole, and r.Body replaced by one that gives the upstream the same
// bytes; other bodies are not read (CRS refuses their content types).
func (e *Engine) Inspect(r *http.Request, client string) Verdict {
	tx := e.waf.NewTransaction()
	defer func() { _ = tx.Close() }()
	tx.ProcessConnection(client, 0, "", 0)
	tx.ProcessURI(r.URL.RequestURI(), r.Method, r.Proto)
	for name, values := range r.Header {
		for _, v := range values {
			tx.AddRequestHeader(name, v)
		}
	}
	// net/http keeps these out of the header map; CRS's protocol rules
	// (920180, 920171) look for them.
	if _, ok := r.Header["Content-Length"]; !ok && r.ContentLength > 0 {
		tx.AddRequestHeader("Content-Length", strconv.FormatInt(r.ContentLength, 10))
	}
	for _, te := range r.TransferEncoding {
		tx.AddRequestHeader("Transfer-Encoding", te)
	}
	if r.Host != "" {
		tx.AddRequestHeader("Host", r.Host)
		tx.SetServerName(r.Host)
	}
	if tx.ProcessRequestHeaders() != nil {
		return e.verdict(tx, false)
	}
	over := false
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		switch kind := kindOf(r.Header["Content-Type"]); {
		case kind == multipartBody && isStored(r.Body):
			over = e.readStored(tx, r)
		case kind != otherBody:
			over = e.readBody(tx, r)
		}
	}
	if over && e.block {
		return e.verdict(tx, true)
	}
	// Phase 2, where most of CRS runs, also for a detect route's body over
	// the limit: its URI and headers are still judged. Coraza fails here
	// only on its own buffers; the request is judged on what the rules
	// saw, as a body the rules could not parse is.
	_, _ = tx.ProcessRequestBody()
	return e.verdict(tx, over)
}

// readBody hands the body to tx when it fits the limit, and reports a
// body over it. The body read is put back in front of the rest, so the
// upstream gets every byte; a read error is put back too, and reaches the
// upstream transport as it would have without the firewall.
func (e *Engine) readBody(tx types.Transaction, r *http.Request) (over bool) {
	if r.ContentLength > e.bodyLimit {
		return true
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, e.bodyLimit+1))
	r.Body = &replay{head: buf, rest: r.Body, err: err}
	if err != nil {
		return false
	}
	if int64(len(buf)) > e.bodyLimit {
		return true
	}
	_, _, _ = tx.WriteRequestBody(buf)
	return false
}

func isStored(b io.ReadCloser) bool {
	_, ok := b.(Stored)
	return ok
}

// readStored hands Coraza a stored multipart body whole when its bytes
// other than file contents fit the limit, and reports one over it. Its
// file parts are parsed (names, sizes) but not matched, as ModSecurity's
// multipart processor does; the limit bounds what is: Coraza holds each
// field's value in memory and every rule reads it. r.Body is given back
// from its start; a stored body that fails to read or rewind (edge's own
// disk) fails the upstream's read too.
func (e *Engine) readStored(tx types.Transaction, r *http.Request) (over bool) {
	body := r.Body.(Stored)
	total, files, err := measure(body, r.Header["Content-Type"][0])
	if err == nil {
		err = body.Rewind()
	}
	if err == nil && (total-files > e.bodyLimit || total >= maxStored) {
		over = true
	}
	if err == nil && !over {
		_, _, err = tx.ReadRequestBodyFrom(body)
		if rerr := body.Rewind(); err == nil {
			err = rerr
		}
	}
	if err != nil {
		r.Body = &replay{rest: body, err: err}
	}
	return over
}

// measure reads a multipart body through and returns its size and the
// size of its file parts' contents. Parts are told apart as Coraza's
// processor tells them (a non-empty filename parameter), erring towards
// counting a part as data. A body that fails to parse is measured to its
// end as data: Coraza's parser, the same, fails at the same byte, and the
// rule scoring that (200003) needs no more.
func measure(body io.Reader, ctype string) (total, files int64, err error) {
	cr := &countingReader{r: body}
	if _, params, perr := mime.ParseMediaType(ctype); perr == nil && params["boundary"] != "" {
		mr := multipart.NewReader(cr, params["boundary"])
		for {
			p, perr := mr.NextPart()
			if perr != nil {
				break
			}
			if _, dp, derr := mime.ParseMediaType(p.Header.Get("Content-Disposition")); derr == nil && dp["filename"] != "" {
				n, _ := io.Copy(io.Discard, p)
				files += n
			}
		}
	}
	// The epilogue, or what follows a malformed part.
	_, err = io.Copy(io.Discard, cr)
	if cr.err != nil {
		err = cr.err
	}
	return cr.n, files, err
}

// countingReader counts what it reads, and keeps the body's read error
// apart from the multipart parser's.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		c.err = err
	}
	return n, err
}

// bodyKind is how a body is inspected, by its content type.
type bodyKind uint8

const (
	// otherBody is not read: CRS rule 920420 refuses its content type
	// (text/plain, octet-stream...) unless an exclusion allows it.
	otherBody bodyKind = iota
	// parsedBody is read up to the limit: JSON (what wx.request sends),
	// URL-encoded forms and XML, every type CRS allows but multipart.
	parsedBody
	// multipartBody is read whole (wx.uploadFile), files included.
	multipartBody
)

// kindOf classifies a body by its first Content-Type, which is the one
// Coraza reads and a backend's Header.Get returns. The media type is what
// precedes any ';', as CRS's rules and most frameworks read it, not
// mime.ParseMediaType's result: that refuses a type whose parameters are
// malformed (a repeated charset), which the app would still parse as
// JSON and Coraza, selecting its processor by prefix, too.
func kindOf(ct []string) bodyKind {
	if len(ct) == 0 {
		return otherBody
	}
	mt, _, _ := strings.Cut(ct[0], ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		return multipartBody
	case mt == "application/json", mt == "application/x-www-form-urlencoded",
		mt == "text/xml", mt == "application/xml", mt == "application/soap+xml",
		strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"):
		return parsedBody
	}
	return otherBody
}

// Attack rules are CRS's 911xxx to 944xxx that have a severity: the
// others there skip paranoia levels or other rules, and those outside set
// variables or sum the score; none says anything a reader could exclude.
const (
	firstAttackRule = 911000
	lastAttackRule  = 944999
	// The blocking evaluation: the score reached the threshold, at the end
	// of phase 2 or (early blocking) of phase 1.
	scoreReached      = 949110
	scoreReachedEarly = 949111
)

// verdict reads the matched rules; tooLarge is a body over the limit, which the engine would refuse whatever the score.
func (e *Engine) verdict(tx types.Transaction, tooLarge bool) Verdict {
	v := Verdict{TooLarge: tooLarge}
	if tooLarge {
		v.Rules = []string{BodyLimitRule}
	}
	exceeded := tooLarge
	for _, m := range tx.MatchedRules() {
		id := m.Rule().ID()
		switch {
		case id >= firstAttackRule && id <= lastAttackRule && m.Rule().Severity() != types.RuleSeverityUnset,
			id == bodyErrorRule, id == multipartErrorRule:
			v.Rules = append(v.Rules, strconv.Itoa(id))
		case id == scoreReached || id == scoreReachedEarly:
			exceeded = true
		}
	}
	switch {
	case exceeded && e.block:
		v.Action = Block
	case exceeded:
		v.Action = Detect
	}
	return v
}

// replay gives back the bytes read for inspection, then the rest of the
// body. It keeps the original body's StopReading, which the proxy calls
// when the upstream has answered before taking the whole body.
type replay struct {
	head []byte // nil for a Stored body, which gives back its own bytes
	rest io.ReadCloser
	err  error
}

func (b *replay) Read(p []byte) (int, error) {
	if len(b.head) > 0 {
		n := copy(p, b.head)
		b.head = b.head[n:]
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	return b.rest.Read(p)
}

func (b *replay) Close() error { return b.rest.Close() }

// StopReading passes the proxy's call on to the body it replaces.
func (b *replay) StopReading() {
	if s, ok := b.rest.(interface{ StopReading() }); ok {
		s.StopReading()
	}
}
