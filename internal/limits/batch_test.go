package limits

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/config"
	"edge/internal/testpeer"
)

// holdHook holds every script call and pipeline sent to Redis until
// released, counts what it holds, and records the size of each pipeline,
// so that a test can fill the batcher's queue while its senders are all
// busy.
type holdHook struct {
	release chan struct{}
	sends   atomic.Int32 // script calls and pipelines held
	calls   atomic.Int32 // decisions in them
	// beforeFirstPipeline runs once, before the first pipeline is sent.
	beforeFirstPipeline func()
	once                sync.Once
	mu                  sync.Mutex
	pipelines           []int
}

func (h *holdHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *holdHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		// A new connection's HELLO goes through here too: only the
		// decisions are held.
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			h.hold(1)
		}
		return next(ctx, cmd)
	}
}

func (h *holdHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.once.Do(h.beforeFirstPipeline)
		h.mu.Lock()
		h.pipelines = append(h.pipelines, len(cmds))
		h.mu.Unlock()
		h.hold(len(cmds))
		return next(ctx, cmds)
	}
}

func (h *holdHook) hold(calls int) {
	h.sends.Add(1)
	h.calls.Add(int32(calls))
	<-h.release
}

// TestBatchedDecisionsAreExact: decisions that queue while every sender is
// busy go to Redis together, in one pipeline, and still decide exactly as
// one at a time would: of 40 concurrent requests on a bucket of 10 that
// does not refill, 10 are allowed, each by its own atomic script, also
// when Redis has lost the script (SCRIPT FLUSH) just before.
func TestBatchedDecisionsAreExact(t *testing.T) {
	const burst, requests = 10, 40
	srv := testpeer.Redis(t)
	rc := redisClient(t, srv)
	// Redis loses the script just before the first batch (as after a
	// restart): the batch must load it again and resend what missed it.
	plain := redisClient(t, srv)
	hook := &holdHook{release: make(chan struct{}), beforeFirstPipeline: func() {
		if err := plain.ScriptFlush(context.Background()).Err(); err != nil {
			t.Error(err)
		}
	}}
	rc.AddHook(hook)
	h := newHarness(t, cfgWith(config.LimitSections{
		Limits:  []config.LimitRule{{Name: "global", Key: "route", Rate: parseRate(t, "1/h"), Burst: burst}},
		Limiter: config.Limiter{RedisTimeout: patientRedis},
	}), harnessOpt{redis: rc})
	if h.e.batch == nil {
		t.Fatal("a *redis.Client must get a batcher")
	}
	handler := h.e.AdmitHandler("api", okHandler)
	var allowed, limited atomic.Int64
	var wg sync.WaitGroup
	for range requests {
		wg.Go(func() {
			w := httptest.NewRecorder()
			handler.ServeHTTP(w, newRequest(client{ip: "192.0.2.1"}))
			switch w.Code {
			case http.StatusOK:
				allowed.Add(1)
			case http.StatusTooManyRequests:
				limited.Add(1)
			}
		})
	}
	// Every call is held on its way, or every sender is held with what it
	// sends, the batcher holds the next call (waiting for a sender) and
	// the others queue: nothing moves until the release.
	deadline := time.Now().Add(10 * time.Second)
	settled := func() bool {
		held, queued := int(hook.calls.Load()), len(h.e.batch.calls)
		return held == requests || hook.sends.Load() == batchSenders && held+queued >= requests-1
	}
	for !settled() {
		if time.Now().After(deadline) {
			close(hook.release)
			t.Fatalf("%d sends of %d calls held, %d queued; want %d sends and %d calls", hook.sends.Load(), hook.calls.Load(),
				len(h.e.batch.calls), batchSenders, requests-1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(hook.release)
	wg.Wait()
	if allowed.Load() != burst || limited.Load() != requests-burst {
		t.Fatalf("%d allowed, %d limited of %d, want exactly %d allowed", allowed.Load(), limited.Load(), requests, burst)
	}
	if n := counterValue(h.m.BackendError("limit")); n != 0 {
		t.Fatalf("%v Redis errors", n)
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	most := 0
	for _, n := range hook.pipelines {
		most = max(most, n)
	}
	if most < 2 {
		t.Fatalf("pipelines of %v commands: the queued decisions did not go together", hook.pipelines)
	}
}

// TestBatchLoadsTheScript: a batch sent to a Redis that does not hold the
// script (restarted, or a new node) loads it and sends again what missed
// it; each call gets its own answer.
func TestBatchLoadsTheScript(t *testing.T) {
	srv := testpeer.Redis(t)
	rc := redisClient(t, srv)
	ctx := context.Background()
	if err := rc.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	b := &batcher{client: rc}
	ctx, cancel := context.WithTimeout(ctx, patientRedis.Std())
	defer cancel()
	var batch []*scriptCall
	for i := range 3 {
		// interval 1 s, tolerance i s: the first call is refused by
		// nothing, each on a key of its own.
		batch = append(batch, &scriptCall{ctx: ctx, keys: []string{"edge:test:batch:" + strconv.Itoa(i)},
			args: []any{int64(time.Second / time.Microsecond), int64(i+1) * int64(time.Second/time.Microsecond), 1, 0}, done: make(chan struct{})})
	}
	b.send(batch)
	for i, c := range batch {
		<-c.done
		out, err := ints(c.res, 3)
		if c.err != nil || err != nil || out[0] != 1 {
			t.Fatalf("call %d: %v %v %v", i, c.res, c.err, err)
		}
	}
	if ok, err := rc.ScriptExists(ctx, limitScript.Hash()).Result(); err != nil || !ok[0] {
		t.Fatalf("the script after the batch: %v %v", ok, err)
	}
}

// TestBatchSkipsCallsGivenUp: a decision whose caller gave up while it
// queued is not sent to Redis, so it takes no token for a request the
// failure policy already answered.
func TestBatchSkipsCallsGivenUp(t *testing.T) {
	srv := testpeer.Redis(t)
	rc := redisClient(t, srv)
	b := &batcher{client: rc}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	live, stop := context.WithTimeout(context.Background(), patientRedis.Std())
	defer stop()
	key := "edge:test:skip"
	args := []any{int64(time.Hour / time.Microsecond), int64(time.Hour / time.Microsecond), 1, 0}
	calls := []*scriptCall{
		{ctx: gone, keys: []string{key}, args: args, done: make(chan struct{})},
		{ctx: live, keys: []string{key + ":other"}, args: args, done: make(chan struct{})},
	}
	b.send(calls)
	<-calls[0].done
	<-calls[1].done
	if calls[0].err == nil || calls[1].err != nil {
		t.Fatalf("errors: given up %v, live %v", calls[0].err, calls[1].err)
	}
	if n, err := rc.Exists(live, key).Result(); err != nil || n != 0 {
		t.Fatalf("the given-up call's bucket exists: %d %v", n, err)
	}
}
