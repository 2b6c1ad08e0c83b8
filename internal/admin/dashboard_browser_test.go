package admin_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"edge/internal/testpeer"
	edgetls "edge/internal/tls"
)

// browser starts headless Chromium for the test, every request it makes
// paused for the test to allow (to the admin listener) or fail and record
// (anything else). The test fails if the page asked for anything outside
// the admin origin.
func browser(t *testing.T, adminOrigin string) (ctx context.Context, allowed func() int) {
	t.Helper()
	bin := testpeer.Binary(t, "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")),
		// The new headless mode is the browser operators use; the old one
		// is a separate, slimmer program.
		chromedp.Flag("headless", "new"),
		chromedp.Flag("disable-gpu", true),
		// Containers give /dev/shm 64 MB, which a renderer outgrows.
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	)
	if os.Geteuid() == 0 {
		// Chromium's sandbox refuses to run as root.
		opts = append(opts, chromedp.NoSandbox)
	}
	// Both cores are busy under go test -race: generous, but bounded.
	base, cancelTimeout := context.WithTimeout(t.Context(), 150*time.Second)
	alloc, cancelAlloc := chromedp.NewExecAllocator(base, opts...)
	ctx, cancelCtx := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
		cancelTimeout()
	})

	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*"}}}); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	var mu sync.Mutex
	var ok int
	var blocked []string
	paused := chromedp.Events(ctx, fetch.RequestPaused)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range paused {
			if err != nil {
				return
			}
			u, perr := url.Parse(ev.Request.URL)
			if perr == nil && u.Scheme+"://"+u.Host == adminOrigin {
				mu.Lock()
				ok++
				mu.Unlock()
				_, _ = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
				continue
			}
			mu.Lock()
			blocked = append(blocked, ev.Request.URL)
			mu.Unlock()
			_, _ = chromedp.Call(ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonBlockedByClient})
		}
	}()
	t.Cleanup(func() {
		cancelCtx()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if len(blocked) > 0 {
			t.Errorf("the page asked for something outside the admin listener: %q", blocked)
		}
	})
	return ctx, func() int {
		mu.Lock()
		defer mu.Unlock()
		return ok
	}
}

// waitFor waits until the JavaScript expression is true in the page.
func waitFor(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(45*time.Second))); err != nil {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("waiting for %s (%s): %v\npage:\n%s", what, expr, err, text)
	}
}

func textHas(sel, want string) string {
	return fmt.Sprintf(`(document.querySelector(%q)?.textContent || "").includes(%q)`, sel, want)
}

func screenshot(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	return path
}

// TestDashboardInChromium loads the page in headless Chromium against a
// running edge with traffic: it asks for the admin token, shows every
// view's values, redraws the live chart with new samples, lifts a ban
// after a confirmation, and asks nothing of any other origin.
// EDGE_DASHBOARD_PNG=path also writes the desktop screenshot there (how
// docs/dashboard.png is made).
func TestDashboardInChromium(t *testing.T) {
	e := startDashEdge(t)
	e.traffic(t)
	var certs edgetls.Status
	e.get(t, "/api/certificates", &certs)
	if len(certs.Certificates) != 1 {
		t.Fatalf("certificates: %+v", certs)
	}
	expiry := certs.Certificates[0].Expiry.UTC().Format("2006-01-02 15:04") + " UTC"

	// Traffic while the page is open, so the chart has something new to
	// draw each time.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				// Not e.send: a goroutine may not end the test.
				if resp, err := e.client.Get("http://" + e.HTTP + "/api/ping"); err == nil {
					resp.Body.Close()
				}
			}
		}
	})
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
	})

	origin := "http://" + e.Admin
	ctx, allowed := browser(t, origin)
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/dashboard/")); err != nil {
		t.Fatal(err)
	}
	// The API answers 401 until the page has the token.
	waitFor(t, ctx, "the token form", `!document.querySelector("#login").hidden`)
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#token"), dashToken),
		chromedp.Click(chromedp.CSS("#login button")),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the views", `document.body.dataset.loaded === "1"`)
	if stored, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem("edge-admin-token")`)); err != nil || stored != dashToken {
		t.Errorf("the token in sessionStorage: %q, %v", stored, err)
	}

	for _, c := range []struct{ what, sel, want string }{
		{"a route", "#routes-table", "limited"},
		{"a route's upstream", "#routes-table", "upstream app"},
		{"a route's limit", "#routes-table", "per_ip"},
		{"a target", "#upstreams-list", e.upstream},
		{"the ban", "#bans-table", "ip " + bannedIP},
		{"the ban's reason", "#bans-table", "rate_limit"},
		{"the limited key", "#limited-table", bannedIP},
		{"an auth rejection", "#rejections-table", "40101"},
		{"the certificate expiry", "#certs-table", expiry},
		{"the last reload", "#reload", "loaded"},
		{"the version", "#facts", "version"},
	} {
		waitFor(t, ctx, c.what, textHas(c.sel, c.want))
	}

	// The chart redraws every 2 s from /api/traffic; the recorder adds a
	// sample a second. Counted, never timed.
	waitFor(t, ctx, "a first chart", `Number(document.querySelector("#chart").dataset.redraws) >= 1`)
	first, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](`[Number(document.querySelector("#chart").dataset.redraws), Number(document.querySelector("#chart").dataset.points)]`))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "two more redraws with new samples", fmt.Sprintf(
		`Number(document.querySelector("#chart").dataset.redraws) >= %d && Number(document.querySelector("#chart").dataset.points) > %d`, first[0]+2, first[1]))

	// The routes view refreshes every 5 s; the rate needs two samples.
	waitFor(t, ctx, "the api route's live rate", `[...document.querySelectorAll("#routes-table tr")].some((tr) => tr.cells[0].textContent === "api" && Number(tr.cells[7].textContent) > 0)`)

	desktop := screenshot(t, ctx, "dashboard-desktop.png")
	if out := os.Getenv("EDGE_DASHBOARD_PNG"); out != "" {
		b, err := os.ReadFile(desktop)
		if err == nil {
			err = os.WriteFile(out, b, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	// Lifting the ban takes two clicks: the first only asks to confirm.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#bans-table button.lift"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the confirmation", textHas("#bans-table", "confirm lift"))
	var sec struct{ Bans []any }
	e.get(t, "/api/security", &sec)
	if len(sec.Bans) != 1 {
		t.Fatalf("the ban went before the confirmation: %+v", sec)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#bans-table button.danger"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the ban gone from the page", `!`+textHas("#bans-table", bannedIP))
	e.get(t, "/api/security", &sec)
	if len(sec.Bans) != 0 {
		t.Errorf("bans after the lift: %+v", sec.Bans)
	}

	// On a phone's screen.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(3), chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the phone layout", `document.documentElement.clientWidth <= 390`)
	if overflow, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > document.documentElement.clientWidth + 1`)); err != nil || overflow {
		t.Errorf("the page is wider than a phone's screen (%v)", err)
	}
	screenshot(t, ctx, "dashboard-phone.png")

	if n := allowed(); n < 8 {
		t.Errorf("the interception saw %d requests to the admin listener; is it on?", n)
	}
	if strings.Contains(e.Stderr(), dashToken) {
		t.Error("the admin token is in edge's log")
	}
}
