package gateway

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// newConfigWatcher watches the config file's directory, not the file, so
// editors that save by renaming a temporary file (vim, sed -i, Kubernetes'
// ..data swap) are seen. It is set up before edge says it is serving, so no
// save after that is missed; nil when the file cannot be watched (reloads
// then need SIGHUP or POST /reload).
func (s *Server) newConfigWatcher() *fsnotify.Watcher {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("cannot watch the config file; reload with SIGHUP or POST /reload", "error", err.Error())
		return nil
	}
	dir := filepath.Dir(s.opts.ConfigPath)
	if err := w.Add(dir); err != nil {
		w.Close()
		s.log.Warn("cannot watch the config directory; reload with SIGHUP or POST /reload", "dir", dir, "error", err.Error())
		return nil
	}
	return w
}

// watchConfig reloads when the config file changes. Events are debounced
// because one save is several events, and the file is applied only once it
// stopped changing.
func (s *Server) watchConfig(ctx context.Context, w *fsnotify.Watcher) {
	defer w.Close()
	name := filepath.Base(s.opts.ConfigPath)
	const debounce = 250 * time.Millisecond
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			base := filepath.Base(ev.Name)
			if base == name || base == "..data" {
				timer.Reset(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.log.Warn("config watcher error", "error", err.Error())
		case <-timer.C:
			data, err := readSettled(ctx, s.readConfigFile, settleInterval, settleTries)
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, errStillChanging):
				// The writer is still at work; its next write is another
				// event, which schedules another look.
				s.log.Info("config file is still being written; waiting for it to settle", "path", s.opts.ConfigPath)
			case err != nil:
				_, _ = s.Reload(TriggerFileChange)
			default:
				// A non-nil slice marks the bytes as settled, even when
				// the file is empty.
				_, _ = s.reload(TriggerFileChange, append([]byte{}, data...))
			}
		}
	}
}

// watchSignals: SIGHUP reloads the config, SIGUSR1 reopens the access log
// file (after logrotate moved it away).
func (s *Server) watchSignals(ctx context.Context, ch <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-ch:
			if sig == syscall.SIGUSR1 {
				s.access.reopen()
				s.log.Info("access log reopened", "trigger", "SIGUSR1")
				continue
			}
			_, _ = s.Reload(TriggerSIGHUP)
		}
	}
}

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
