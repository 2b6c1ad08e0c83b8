package tls

import (
	"encoding/json"
	"testing"
)

func TestProblemIn(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"problem", 403, `{"type":"urn:ietf:params:acme:error:unauthorized","detail":"no"}`, "403 urn:ietf:params:acme:error:unauthorized: no"},
		{"bad nonce is retried, not a failure", 400, `{"type":"urn:ietf:params:acme:error:badNonce","detail":"x"}`, ""},
		{"valid authz", 200, `{"status":"valid","challenges":[{"type":"http-01"}]}`, ""},
		{"invalid challenge", 200, `{"status":"invalid","challenges":[{"type":"tls-alpn-01"},{"type":"http-01","error":{"type":"urn:ietf:params:acme:error:connection","detail":"refused"}}]}`,
			"http-01 urn:ietf:params:acme:error:connection: refused"},
		{"invalid order", 200, `{"status":"invalid","error":{"type":"t","detail":"d"}}`, "t: d"},
		{"invalid, no reason", 200, `{"status":"invalid"}`, "invalid without a reason"},
		{"not json", 500, `<html>`, ""},
		{"directory", 200, `{"newOrder":"https://x/order"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := problemIn(tt.status, []byte(tt.body)); got != tt.want {
				t.Errorf("problemIn = %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzProblemIn feeds CA answers (untrusted input from the network): no
// panic, and a successful non-invalid answer is never a failure.
func FuzzProblemIn(f *testing.F) {
	for _, seed := range []string{
		`{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many"}`,
		`{"status":"invalid","challenges":[{"type":"http-01","error":{"type":"a","detail":"b"}}]}`,
		`{"status":"invalid","error":null}`, `{"challenges":null}`, `[]`, `null`, ``, `{"status":1}`,
	} {
		f.Add(200, []byte(seed))
		f.Add(400, []byte(seed))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		got := problemIn(status, body)
		if status >= 400 || got == "" {
			return
		}
		var v struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(body, &v) != nil || v.Status != "invalid" {
			t.Fatalf("answer %d %q reported as failure %q", status, body, got)
		}
	})
}
