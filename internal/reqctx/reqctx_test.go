package reqctx

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestHolderActsAsARequestContext: a Holder carries the Info set into it,
// arms the server's watch once per request and only when asked for the
// request's end, runs AfterFunc callbacks and derived contexts' cancels on
// Cancel, and starts clean after Reset.
func TestHolderActsAsARequestContext(t *testing.T) {
	watches := 0
	h := NewHolder(func() { watches++ })
	info := &Info{RequestID: "r1"}
	h.Set(info)
	if got := From(h); got != info {
		t.Fatalf("From = %v, want the Info set", got)
	}
	if h.Err() != nil || watches != 0 {
		t.Fatalf("a fresh request: err %v, watches %d", h.Err(), watches)
	}

	ran := make(chan struct{}, 3)
	stopped := AfterFunc(h, func() { ran <- struct{}{} })
	AfterFunc(h, func() { ran <- struct{}{} })
	child, cancel := context.WithTimeout(h, time.Hour)
	defer cancel()
	if watches != 1 {
		t.Fatalf("watch armed %d times, want once per request", watches)
	}
	if !stopped.Stop() {
		t.Fatal("stop of a pending AfterFunc reported false")
	}
	h.Cancel()
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("AfterFunc did not run on Cancel")
	}
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a context derived from the Holder was not cancelled")
	}
	select {
	case <-ran:
		t.Fatal("a stopped AfterFunc ran")
	case <-time.After(100 * time.Millisecond):
	}
	if !errors.Is(h.Err(), context.Canceled) {
		t.Fatalf("Err after Cancel = %v", h.Err())
	}
	select {
	case <-h.Done():
	default:
		t.Fatal("Done not closed after Cancel")
	}

	h.Reset()
	if From(h) != nil || h.Err() != nil {
		t.Fatal("Reset kept the previous request's Info or error")
	}
	select {
	case <-h.Done():
		t.Fatal("Done closed for a new request")
	default:
	}
	if watches != 2 {
		t.Fatalf("the next request's Done armed the watch %d times in all, want 2", watches)
	}
}
