package live

import (
	"testing"
	"time"
)

func TestRecorder(t *testing.T) {
	rc := NewRecorder()
	api, web := rc.Route("api"), rc.Route("web")
	if rc.Route("api") != api {
		t.Fatal("a name must keep its counters")
	}
	start := time.Unix(1_700_000_000, 0)
	rc.Tick(start)
	for range 98 {
		api.Observe(200, 3*time.Millisecond)
	}
	api.Observe(502, 900*time.Millisecond)
	web.Observe(404, 100*time.Microsecond)
	rc.Tick(start.Add(time.Second))
	rc.Tick(start.Add(2 * time.Second))

	tr := rc.Traffic()
	if len(tr.Points) != 3 {
		t.Fatalf("points: %d", len(tr.Points))
	}
	p := tr.Points[1]
	if p.At != start.Unix()+1 || p.Requests != 100 || p.ErrorRate != 0.01 {
		t.Fatalf("second 1: %+v", p)
	}
	// 3 ms falls in the bucket up to 4.096 ms; 900 ms in the one up to 1.048576 s.
	if p.P50Ms != 4.096 || p.P99Ms != 4.096 {
		t.Fatalf("percentiles: %+v", p)
	}
	if tr.Points[2].Requests != 0 || tr.LastMinute.Seconds != 3 || tr.LastMinute.RPS != 100.0/3 {
		t.Fatalf("summary: %+v", tr)
	}
	routes := rc.Routes([]string{"api", "web", "gone"})
	if len(routes) != 2 || routes["api"].Classes["2xx"] != 98 || routes["api"].Classes["5xx"] != 1 || routes["web"].Classes["4xx"] != 1 {
		t.Fatalf("routes: %+v", routes)
	}
	if routes["api"].RPS != 99.0/2 {
		t.Fatalf("api rate over two ticks: %v", routes["api"].RPS)
	}
}

func TestRingWraps(t *testing.T) {
	rc := NewRecorder()
	r := rc.Route("")
	start := time.Unix(1_700_000_000, 0)
	for i := range Window + 10 {
		r.Observe(200, time.Millisecond)
		rc.Tick(start.Add(time.Duration(i) * time.Second))
	}
	tr := rc.Traffic()
	if len(tr.Points) != Window || tr.Points[0].At != start.Unix()+10 || tr.Points[Window-1].At != start.Unix()+Window+9 {
		t.Fatalf("ring: %d points from %d to %d", len(tr.Points), tr.Points[0].At, tr.Points[len(tr.Points)-1].At)
	}
	if tr.LastMinute.Seconds != 60 || tr.LastMinute.RPS != 1 {
		t.Fatalf("summary: %+v", tr.LastMinute)
	}
}

func TestObserveAllocatesNothing(t *testing.T) {
	r := NewRecorder().Route("api")
	if n := testing.AllocsPerRun(100, func() { r.Observe(200, time.Millisecond) }); n != 0 {
		t.Fatalf("Observe allocates %v", n)
	}
}
