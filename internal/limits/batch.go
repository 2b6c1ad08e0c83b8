package limits

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// pipeliner is a client that can send several commands in one write and
// read their answers in one read (*redis.Client, *redis.ClusterClient and
// every redis.UniversalClient can).
type pipeliner interface {
	redis.Scripter
	Pipeline() redis.Pipeliner
}

// batcher sends the limit decisions of concurrent requests to Redis
// together: while one batch is on its way, the decisions that arrive
// meanwhile queue and go as the next batch, one pipelined write and read
// for all of them. Each decision is still its own atomic script call
// (its keys, its answer, its refunds); what is shared is the round trip
// and the system calls on both sides, which are most of what a decision
// costs edge and Redis. Nothing waits for a batch to fill: a decision
// that finds no other goes at once, alone, as before.
type batcher struct {
	client pipeliner
	calls  chan *scriptCall
	stop   chan struct{}
	done   chan struct{}
}

// scriptCall is one decision waiting for its answer.
type scriptCall struct {
	ctx  context.Context
	keys []string
	args []any
	res  any
	err  error
	done chan struct{}
}

const (
	// batchSenders is how many batches may be on their way at once; the
	// decisions arriving meanwhile form the next ones.
	batchSenders = 4
	// batchMax bounds one batch, so that one write stays small and a
	// batch's answers come back while its callers still wait.
	batchMax = 64
)

// newBatcher returns nil for a client that cannot pipeline (callers then
// run the script themselves) and for no client.
func newBatcher(c redis.Scripter) *batcher {
	p, ok := c.(pipeliner)
	if !ok || p == nil {
		return nil
	}
	b := &batcher{client: p, calls: make(chan *scriptCall, batchSenders*batchMax), stop: make(chan struct{}), done: make(chan struct{})}
	go b.run()
	return b
}

func (b *batcher) run() {
	defer close(b.done)
	senders := make(chan struct{}, batchSenders)
	for {
		var first *scriptCall
		select {
		case <-b.stop:
			return
		case first = <-b.calls:
		}
		select {
		case senders <- struct{}{}:
		case <-b.stop:
			// Unsent: its caller gives up at its deadline.
			return
		}
		batch := []*scriptCall{first}
	more:
		for len(batch) < batchMax {
			select {
			case c := <-b.calls:
				batch = append(batch, c)
			default:
				break more
			}
		}
		go func() {
			b.send(batch)
			<-senders
		}()
	}
}

// close stops taking batches; those on their way finish by themselves,
// and calls still queued end at their callers' deadlines.
func (b *batcher) close() {
	close(b.stop)
	<-b.done
}

// eval runs the limit script for keys and args in the next batch.
func (b *batcher) eval(ctx context.Context, keys []string, args []any) (any, error) {
	c := &scriptCall{ctx: ctx, keys: keys, args: args, done: make(chan struct{})}
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// send runs a batch in one pipeline, bounded by the latest deadline among
// its calls (each caller stops waiting at its own); a script Redis does
// not hold yet (after a restart, or on a new cluster node) is loaded and
// the calls that missed it go again.
func (b *batcher) send(batch []*scriptCall) {
	// A call whose caller gave up while it queued is not sent: it would
	// take tokens in Redis for a request already answered by the failure
	// policy.
	live := batch[:0:0]
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.err = err
			close(c.done)
			continue
		}
		live = append(live, c)
	}
	batch = live
	if len(batch) == 0 {
		return
	}
	if len(batch) == 1 {
		// Alone: a plain call, with no pipeline to build.
		c := batch[0]
		c.res, c.err = limitScript.Run(c.ctx, b.client, c.keys, c.args...).Result()
		close(c.done)
		return
	}
	ctx, cancel := batchContext(batch)
	defer cancel()
	cmds := b.pipeline(ctx, batch)
	var again []*scriptCall
	for i, c := range batch {
		c.res, c.err = cmds[i].Result()
		if c.err != nil && strings.HasPrefix(c.err.Error(), "NOSCRIPT") {
			again = append(again, c)
			continue
		}
		close(c.done)
	}
	if len(again) == 0 {
		return
	}
	err := limitScript.Load(ctx, b.client).Err()
	if err == nil {
		cmds = b.pipeline(ctx, again)
	}
	for i, c := range again {
		if err == nil {
			c.res, c.err = cmds[i].Result()
		} else {
			c.res, c.err = nil, err
		}
		close(c.done)
	}
}

func (b *batcher) pipeline(ctx context.Context, batch []*scriptCall) []*redis.Cmd {
	pipe := b.client.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, c := range batch {
		cmds[i] = pipe.EvalSha(ctx, limitScript.Hash(), c.keys, c.args...)
	}
	// Each command carries its own error; Exec's is the first of them.
	_, _ = pipe.Exec(ctx)
	return cmds
}

// batchContext lasts until the latest deadline of the batch's calls, and
// has none when one of them has none.
func batchContext(batch []*scriptCall) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, c := range batch {
		d, ok := c.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.Background())
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.Background(), latest)
}
