package testutil

import (
	"errors"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"
)

// RefusalWatch is a client that GETs a URL on a new connection at a steady
// pace, as a load balancer's traffic would, and notes when a connection
// was first refused: what a draining server must not do too early.
type RefusalWatch struct {
	start        time.Time
	firstRefused atomic.Int64 // ns after start; 0: none yet
	stop, done   chan struct{}
}

// WatchRefusals starts the client; Stop ends it.
func WatchRefusals(url string, every time.Duration) *RefusalWatch {
	w := &RefusalWatch{start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(every):
			}
			resp, err := client.Get(url)
			if err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) && w.firstRefused.Load() == 0 {
					w.firstRefused.Store(int64(time.Since(w.start)))
				}
				continue
			}
			resp.Body.Close()
		}
	}()
	return w
}

// Stop ends the client and returns when, after it started, a connection
// was first refused; 0 when none was.
func (w *RefusalWatch) Stop() time.Duration {
	close(w.stop)
	<-w.done
	return time.Duration(w.firstRefused.Load())
}
