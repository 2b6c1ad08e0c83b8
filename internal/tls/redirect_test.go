package tls

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"edge/internal/config"
)

func TestRedirectHandler(t *testing.T) {
	plain := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain") })
	tests := []struct {
		name, port, method, host, target string
		status                           int
		location                         string
	}{
		{"get", "443", "GET", "api.example.com", "/a/b?c=d&e", 308, "https://api.example.com/a/b?c=d&e"},
		{"post keeps method via 308", "443", "POST", "api.example.com", "/submit", 308, "https://api.example.com/submit"},
		{"port stripped", "443", "GET", "API.example.com:80", "/", 308, "https://api.example.com/"},
		{"non-default https port", "8443", "GET", "api.example.com:8080", "/x", 308, "https://api.example.com:8443/x"},
		{"ipv6", "443", "GET", "[::1]:80", "/", 308, "https://[::1]/"},
		{"exempt exact", "443", "GET", "legacy.example.com", "/", 200, ""},
		{"exempt wildcard", "443", "GET", "x.old.example.com:80", "/", 200, ""},
		{"wildcard covers one label", "443", "GET", "y.x.old.example.com", "/", 308, "https://y.x.old.example.com/"},
		{"no host", "443", "GET", "", "/", 400, ""},
	}
	h := RedirectHandler("", []string{"legacy.example.com", "*.old.example.com"}, plain)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := h
			if tt.port != "443" {
				h = RedirectHandler(tt.port, nil, plain)
			}
			req := httptest.NewRequest(tt.method, "http://placeholder"+tt.target, strings.NewReader("body"))
			req.Host = tt.host
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d", rec.Code, tt.status)
			}
			if got := rec.Header().Get("Location"); got != tt.location {
				t.Errorf("Location %q, want %q", got, tt.location)
			}
		})
	}
}

func TestHSTSValue(t *testing.T) {
	year := config.Duration(365 * 24 * time.Hour)
	tests := []struct {
		in   config.HSTS
		want string
	}{
		{config.HSTS{}, ""},
		{config.HSTS{MaxAge: config.Duration(time.Hour)}, "max-age=3600"},
		{config.HSTS{MaxAge: year, IncludeSubdomains: true}, "max-age=31536000; includeSubDomains"},
		{config.HSTS{MaxAge: year, IncludeSubdomains: true, Preload: true}, "max-age=31536000; includeSubDomains; preload"},
	}
	for _, tt := range tests {
		if got := HSTSValue(tt.in); got != tt.want {
			t.Errorf("HSTSValue(%+v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestPortOf(t *testing.T) {
	for in, want := range map[string]string{":443": "443", "127.0.0.1:8443": "8443", "[::]:443": "443", "nonsense": ""} {
		if got := PortOf(in); got != want {
			t.Errorf("PortOf(%q) = %q, want %q", in, got, want)
		}
	}
}
