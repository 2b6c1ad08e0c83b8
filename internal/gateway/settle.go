package gateway

import (
	"bytes"
	"context"
	"errors"
	"time"
)

// A file written in place (`cat > edge.toml`, many editors) is empty or
// half-written for a moment; the watcher applies it only once two reads
// settleInterval apart agree.
const (
	settleInterval = 100 * time.Millisecond
	settleTries    = 20
)

var errStillChanging = errors.New("the file is still changing")

// readSettled calls read until two consecutive reads, interval apart,
// return the same bytes, at most tries times after the first; after that
// it gives up with errStillChanging.
func readSettled(ctx context.Context, read func() ([]byte, error), interval time.Duration, tries int) ([]byte, error) {
	prev, err := read()
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(interval)
	defer t.Stop()
	for range tries {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
		cur, err := read()
		if err != nil {
			return nil, err
		}
		if bytes.Equal(prev, cur) {
			return cur, nil
		}
		prev = cur
		t.Reset(interval)
	}
	return nil, errStillChanging
}
