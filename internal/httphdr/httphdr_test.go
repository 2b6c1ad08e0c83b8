package httphdr

import (
	"slices"
	"strings"
	"testing"
)

func TestEdgeOwned(t *testing.T) {
	for name, want := range map[string]bool{
		"X-Wx-Openid": true, "x-wx-openid": true, "X_WX_OPENID": true, "x_Wx-OpenId": true, "X-WX-SOURCE": true,
		"X-Edge-Signature": true, "x_edge_nonce": true, "X-Wx-": true,
		"X-Wx": false, "X-Wxopenid": false, "X-Edgeway": false, "Wx-Openid": false, "": false, "X-Forwarded-For": false,
	} {
		if got := EdgeOwned(name); got != want {
			t.Errorf("EdgeOwned(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestHasToken(t *testing.T) {
	tests := []struct {
		values []string
		token  string
		want   bool
	}{
		{[]string{"X-Hop"}, "X-Hop", true},
		{[]string{"close, x-hop"}, "X-Hop", true},
		{[]string{"close", " \tX-Hop\t "}, "X-Hop", true},
		{[]string{"Upgrade,,X-Wx-Openid"}, "x-wx-openid", true},
		{[]string{"X-Hop2"}, "X-Hop", false},
		{[]string{"X-Ho"}, "X-Hop", false},
		{[]string{""}, "X-Hop", false},
		{nil, "trailers", false},
		{[]string{"gzip, trailers"}, "trailers", true},
	}
	for _, tt := range tests {
		if got := HasToken(tt.values, tt.token); got != tt.want {
			t.Errorf("HasToken(%q, %q) = %v, want %v", tt.values, tt.token, got, tt.want)
		}
	}
}

// FuzzHasToken holds the token-list reader to the plain reading of the
// list: split on commas, trim, compare without case. Connection and Te are
// client input.
func FuzzHasToken(f *testing.F) {
	f.Add("close, X-Hop", "x-hop")
	f.Add("Upgrade,,\tX-Wx-Openid ", "X-WX-OPENID")
	f.Add("", "trailers")
	f.Fuzz(func(t *testing.T, value, token string) {
		if token == "" || strings.TrimSpace(token) != token || strings.Contains(token, ",") {
			return // the tokens looked up are header names and keywords
		}
		want := false
		for _, part := range strings.Split(value, ",") {
			want = want || strings.EqualFold(strings.TrimSpace(part), token)
		}
		if got := HasToken([]string{value}, token); got != want {
			t.Fatalf("HasToken(%q, %q) = %v, want %v", value, token, got, want)
		}
	})
}

func TestElements(t *testing.T) {
	var got []string
	for e := range Elements([]string{" gzip ;q=0.5, ,br", "", "x-gzip"}) {
		got = append(got, e)
	}
	if want := []string{"gzip ;q=0.5", "br", "x-gzip"}; !slices.Equal(got, want) {
		t.Fatalf("Elements = %q, want %q", got, want)
	}
	values := []string{"keep-alive, Upgrade"}
	if n := testing.AllocsPerRun(100, func() { HasToken(values, "upgrade") }); n != 0 {
		t.Fatalf("HasToken allocates %v times", n)
	}
}
