package gateway

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// shutdown runs once Serve's context is done. /readyz answers 503 at once;
// the listeners keep serving for server.shutdown_delay, so a load balancer
// that polls readiness stops sending before they close; then in-flight
// requests drain for up to server.shutdown_grace. The admin listener closes
// last: readiness stays observable (503, not a refused connection) for the
// whole drain. Options.Abort cuts both waits short and closes every
// connection.
func (s *Server) shutdown(traffic []listenerServer, admin *http.Server) {
	s.ready.Store(false)
	// An admin deploy's answer would otherwise hold the admin listener's
	// drain for up to deploy_timeout.
	s.gw.stopDeploys()
	sc := s.currentConfig().Server
	delay, grace := sc.ShutdownDelay.Std(), sc.ShutdownGrace.Std()

	aborted, cancelAbort := context.WithCancel(context.Background())
	defer cancelAbort()
	go func() {
		select {
		case <-s.opts.Abort:
			s.log.Warn("second stop signal: closing every connection now")
			cancelAbort()
		case <-aborted.Done():
		}
	}()

	if delay > 0 {
		s.log.Info("shutting down: /readyz answers 503; serving until shutdown_delay has passed", "shutdown_delay", delay.String())
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-aborted.Done():
			t.Stop()
		}
	}
	s.log.Info("shutting down: draining in-flight requests", "grace", grace.String())
	drainCtx, cancel := context.WithTimeout(aborted, grace)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range traffic {
		wg.Go(func() {
			if err := srv.Shutdown(drainCtx); err != nil {
				if aborted.Err() == nil {
					s.log.Warn("grace period over: closing the remaining connections")
				}
				srv.Close()
			}
		})
	}
	wg.Wait()
	if admin != nil && admin.Shutdown(drainCtx) != nil {
		admin.Close()
	}
}
