package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"edge/internal/apierror"
	"edge/internal/testpeer"
)

func TestVectorsThroughPolicy(t *testing.T) {
	vec := loadVectors(t)
	now := testpeer.NewClock(time.Unix(vec.Now, 0))
	cfg := testConfig()
	s := newService(t, cfg, Options{Now: now.Now})
	token, _ := sessionWithKey(t, s.Sealer(), vec.SignKey)

	for _, v := range vec.Valid {
		t.Run("valid "+v.Method+" "+v.Path, func(t *testing.T) {
			rt := testRoute("signed")
			rt.AllowUnsignedPayload = v.Unsigned
			rec, got := serveThrough(t, s, rt, v.request(t, token), false)
			if !got.called {
				t.Fatalf("refused with %d %s", rec.Code, rec.Body.String())
			}
			body := v.request(t, token)
			want, _ := readAll(body)
			if got.body != want {
				t.Errorf("upstream body %q, want %q", got.body, want)
			}
			if got.header.Get("X-WX-OPENID") != "o-user-openid-0000000000001" || got.header.Get("X-WX-APPID") != testAppID {
				t.Errorf("identity headers %v", got.header)
			}
			for _, h := range []string{"Authorization", "X-Edge-Signature", "X-Edge-Nonce", "X-Edge-Timestamp", "X-Edge-Body"} {
				if _, ok := got.header[h]; ok {
					t.Errorf("%s reached the upstream", h)
				}
			}
			if got.info.OpenID != "o-user-openid-0000000000001" || got.info.AppID != testAppID || got.info.UnionID != "u-union-1" {
				t.Errorf("reqctx identity %+v", got.info)
			}
		})
	}
	for _, v := range vec.Invalid {
		t.Run("invalid: "+v.Reason, func(t *testing.T) {
			rec, got := serveThrough(t, s, testRoute("signed"), v.request(t, token), false)
			if got.called {
				t.Fatal("reached the upstream")
			}
			if code := errorCode(t, rec); code != v.Code {
				t.Errorf("code %d, want %d", code, v.Code)
			}
		})
	}
}

func readAll(r *http.Request) (string, error) {
	b, err := io.ReadAll(r.Body)
	return string(b), err
}

func TestVectorReplayed(t *testing.T) {
	vec := loadVectors(t)
	now := testpeer.NewClock(time.Unix(vec.Now, 0))
	s := newService(t, testConfig(), Options{Now: now.Now})
	token, _ := sessionWithKey(t, s.Sealer(), vec.SignKey)
	v := vec.Valid[0]
	if rec, got := serveThrough(t, s, testRoute("signed"), v.request(t, token), false); !got.called {
		t.Fatalf("first request refused: %s", rec.Body.String())
	}
	rec, got := serveThrough(t, s, testRoute("signed"), v.request(t, token), false)
	if got.called || errorCode(t, rec) != int(apierror.Replayed) {
		t.Fatalf("replay answered %d %s", rec.Code, rec.Body.String())
	}
	// Another session may use the same nonce: nonces are per token.
	other, _ := sessionWithKey(t, s.Sealer(), vec.SignKey)
	if rec, got := serveThrough(t, s, testRoute("signed"), v.request(t, other), false); !got.called {
		t.Fatalf("same nonce on another token refused: %s", rec.Body.String())
	}
}

func TestFailedSignatureDoesNotBurnNonce(t *testing.T) {
	vec := loadVectors(t)
	now := testpeer.NewClock(time.Unix(vec.Now, 0))
	s := newService(t, testConfig(), Options{Now: now.Now})
	token, _ := sessionWithKey(t, s.Sealer(), vec.SignKey)
	v := vec.Valid[0]
	forged := v
	forged.Signature = strings.Repeat("0", 64)
	if rec, _ := serveThrough(t, s, testRoute("signed"), forged.request(t, token), false); errorCode(t, rec) != int(apierror.BadSignature) {
		t.Fatalf("forged: %s", rec.Body.String())
	}
	// The unsigned-payload refusal comes before the nonce is recorded, too.
	unsigned := vec.Valid[len(vec.Valid)-1]
	if !unsigned.Unsigned {
		t.Fatal("last valid vector is expected to be the UNSIGNED-PAYLOAD one")
	}
	if rec, _ := serveThrough(t, s, testRoute("signed"), unsigned.request(t, token), false); errorCode(t, rec) != int(apierror.BadSignature) {
		t.Fatalf("unsigned on a strict route: %s", rec.Body.String())
	}
	for _, v := range []sigVector{v, unsigned} {
		rt := testRoute("signed")
		rt.AllowUnsignedPayload = true
		if rec, got := serveThrough(t, s, rt, v.request(t, token), false); !got.called {
			t.Fatalf("genuine request after a refused one: %s", rec.Body.String())
		}
	}
}

func TestNonceForgottenAfterTwiceSkew(t *testing.T) {
	vec := loadVectors(t)
	now := testpeer.NewClock(time.Unix(vec.Now, 0))
	s := newService(t, testConfig(), Options{Now: now.Now})
	v := vec.Valid[0]
	token, _ := sessionWithKey(t, s.Sealer(), vec.SignKey)
	if _, got := serveThrough(t, s, testRoute("signed"), v.request(t, token), false); !got.called {
		t.Fatal("refused")
	}
	// Inside the window the replay is caught even when the timestamp is
	// still acceptable; after it the timestamp check refuses instead.
	now.Advance(4 * time.Minute)
	if rec, _ := serveThrough(t, s, testRoute("signed"), v.request(t, token), false); errorCode(t, rec) != int(apierror.Replayed) {
		t.Fatalf("replay at +4m: %s", rec.Body.String())
	}
	now.Advance(10 * time.Minute)
	if rec, _ := serveThrough(t, s, testRoute("signed"), v.request(t, token), false); errorCode(t, rec) != int(apierror.StaleTimestamp) {
		t.Fatalf("replay at +14m: %s", rec.Body.String())
	}
}

func TestVectorStringsToSign(t *testing.T) {
	vec := loadVectors(t)
	for _, v := range vec.Valid {
		var c canonicalQuery
		q, ok := c.canonical(v.Query)
		if !ok {
			t.Fatalf("%s: query %q refused", v.Path, v.Query)
		}
		lines := strings.Split(v.StringToSign, "\n")
		if string(q) != lines[2] {
			t.Errorf("canonical(%q) = %q, want %q", v.Query, q, lines[2])
		}
		sg := signerPool.Get().(*signer)
		sum, _ := sg.sign([]byte(vec.SignKey), v.Method, v.Path, v.Query, lines[3], v.Nonce, []byte(lines[5]))
		signerPool.Put(sg)
		if hex.EncodeToString(sum[:]) != v.Signature {
			t.Errorf("%s %s: signature %x, want %s", v.Method, v.Path, sum, v.Signature)
		}
	}
}

func TestCanonicalQuery(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"", "", true},
		{"a=1", "a=1", true},
		{"b=2&a=1", "a=1&b=2", true},
		{"a=2&a=10&a=1", "a=1&a=10&a=2", true},
		{"flag", "flag=", true},
		{"a=&b", "a=&b=", true},
		{"x=a+b", "x=a%20b", true},
		{"x=a%20b", "x=a%20b", true},
		{"x=%7e%2d%2E%5F", "x=~-._", true},
		{"x=%2b", "x=%2B", true},
		{"x=a=b", "x=a%3Db", true},
		{"%E5%B0%8F=1", "%E5%B0%8F=1", true},
		{"x=é", "x=%C3%A9", true},
		{"a=1&&b=2&", "a=1&b=2", true},
		{"x=*'()!", "x=%2A%27%28%29%21", true},
		{"x=%", "", false},
		{"x=%4", "", false},
		{"x=%zz", "", false},
		// Pairs sort by encoded bytes: '%' sorts before every unreserved
		// character.
		{"a~=1&a%FF=2", "a%FF=2&a~=1", true},
		// Equal names fall back to the encoded values, the same way: a
		// decoded comparison would put 0xE4 after '0'.
		{"a=0&a=%E4%B8%AD", "a=%E4%B8%AD&a=0", true},
	} {
		var c canonicalQuery
		got, ok := c.canonical(tc.in)
		if ok != tc.ok || (ok && string(got) != tc.want) {
			t.Errorf("canonical(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestCanonicalQueryBounded(t *testing.T) {
	var c canonicalQuery
	if _, ok := c.canonical(strings.Repeat("a=1&", maxQueryPairs)); !ok {
		t.Error("the maximum number of pairs was refused")
	}
	if _, ok := c.canonical(strings.Repeat("a=1&", maxQueryPairs+1)); ok {
		t.Error("one pair too many was accepted")
	}
}

func TestParseSigHeaders(t *testing.T) {
	good := func() http.Header {
		return http.Header{
			"X-Edge-Timestamp": {"1772538165"},
			"X-Edge-Nonce":     {"P7rnMXnYhAyv9noD8R0Q8c_MsIwm"},
			"X-Edge-Signature": {strings.Repeat("ab", 32)},
		}
	}
	for _, tc := range []struct {
		name   string
		edit   func(http.Header)
		ok     bool
		unsign bool
	}{
		{"good", func(http.Header) {}, true, false},
		{"unsigned payload", func(h http.Header) { h.Set("X-Edge-Body", "UNSIGNED-PAYLOAD") }, true, true},
		{"other X-Edge-Body", func(h http.Header) { h.Set("X-Edge-Body", "unsigned-payload") }, false, false},
		{"no timestamp", func(h http.Header) { h.Del("X-Edge-Timestamp") }, false, false},
		{"negative timestamp", func(h http.Header) { h.Set("X-Edge-Timestamp", "-1") }, false, false},
		{"huge timestamp", func(h http.Header) { h.Set("X-Edge-Timestamp", strings.Repeat("9", 19)) }, false, false},
		{"two timestamps", func(h http.Header) { h.Add("X-Edge-Timestamp", "1") }, false, false},
		{"nonce 15", func(h http.Header) { h.Set("X-Edge-Nonce", strings.Repeat("a", 15)) }, false, false},
		{"nonce 16", func(h http.Header) { h.Set("X-Edge-Nonce", strings.Repeat("a", 16)) }, true, false},
		{"nonce 64", func(h http.Header) { h.Set("X-Edge-Nonce", strings.Repeat("a", 64)) }, true, false},
		{"nonce 65", func(h http.Header) { h.Set("X-Edge-Nonce", strings.Repeat("a", 65)) }, false, false},
		{"nonce dot", func(h http.Header) { h.Set("X-Edge-Nonce", strings.Repeat("a", 20)+".") }, false, false},
		{"uppercase hex", func(h http.Header) { h.Set("X-Edge-Signature", strings.Repeat("AB", 32)) }, false, false},
		{"short signature", func(h http.Header) { h.Set("X-Edge-Signature", strings.Repeat("ab", 31)) }, false, false},
		{"no signature", func(h http.Header) { h.Del("X-Edge-Signature") }, false, false},
	} {
		h := good()
		tc.edit(h)
		p, err := parseSigHeaders(h)
		if (err == nil) != tc.ok || (tc.ok && p.unsigned != tc.unsign) {
			t.Errorf("%s: err %v unsigned %v", tc.name, err, p.unsigned)
		}
	}
}

func TestHMACMatchesStandardLibrary(t *testing.T) {
	m := hmacSHA256{inner: sha256.New(), outer: sha256.New()}
	for _, key := range [][]byte{nil, []byte("k"), []byte(strings.Repeat("k", 64)), []byte(strings.Repeat("long key ", 20))} {
		for _, msg := range []string{"", "hello", strings.Repeat("x", 1000)} {
			m.reset(key)
			m.Write([]byte(msg))
			got := m.final()
			ref := hmac.New(sha256.New, key)
			ref.Write([]byte(msg))
			if hex.EncodeToString(got[:]) != hex.EncodeToString(ref.Sum(nil)) {
				t.Errorf("key %d bytes, msg %d bytes: mismatch", len(key), len(msg))
			}
		}
	}
}

func FuzzParseSigHeaders(f *testing.F) {
	f.Add("1772538165", "P7rnMXnYhAyv9noD8R0Q8c_MsIwm", strings.Repeat("0a", 32), "")
	f.Add("", "", "", "UNSIGNED-PAYLOAD")
	f.Add("00000000000000000001", "abc def ghi jkl mno", strings.Repeat("z", 64), "x")
	f.Fuzz(func(t *testing.T, ts, nonce, sig, body string) {
		h := http.Header{"X-Edge-Timestamp": {ts}, "X-Edge-Nonce": {nonce}, "X-Edge-Signature": {sig}}
		if body != "" {
			h["X-Edge-Body"] = []string{body}
		}
		p, err := parseSigHeaders(h)
		if err != nil {
			return
		}
		if p.timestamp < 0 || !validNonce(p.nonce) || hex.EncodeToString(p.signature[:]) != sig {
			t.Fatalf("accepted malformed headers %q %q %q", ts, nonce, sig)
		}
	})
}

func FuzzCanonicalQuery(f *testing.F) {
	for _, s := range []string{"", "a=1", "q=%E5%B0%8F&page=2&b=x+y&a=1&a=0&empty=&flag", "v=%2B1&tilde=~x", "%", "&&=&", "a=%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var c canonicalQuery
		out, ok := c.canonical(raw)
		if !ok {
			return
		}
		// The canonical form is a fixed point: canonicalising it again
		// changes nothing, and it holds only unreserved bytes, escapes and
		// the separators.
		again, ok := (&canonicalQuery{}).canonical(string(out))
		if !ok || string(again) != string(out) {
			t.Fatalf("canonical(%q) = %q is not stable: %q", raw, out, again)
		}
		for i := 0; i < len(out); i++ {
			if b := out[i]; !unreserved(b) && b != '%' && b != '=' && b != '&' && !('A' <= b && b <= 'F') {
				t.Fatalf("canonical(%q) holds %q", raw, b)
			}
		}
	})
}
