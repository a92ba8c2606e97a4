package web

import (
	"bytes"
	"net/http"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/rest"
)

// EventStream is the media type of Server-Sent Events.
const EventStream = "text/event-stream"

// DefaultHeartbeat is how often an idle event stream gets a comment, so
// that proxies and load balancers keep the connection open.
const DefaultHeartbeat = 15 * time.Second

// A REST call to a server-streaming route that accepts text/event-stream
// is answered as Server-Sent Events: grpc-gateway picks the marshaler by
// the Accept header, and the SSE marshaler writes each stream chunk as an
// event: a message as "data: <the NDJSON line>", the final error as
// "event: error" with the google.rpc.Status. Unary replies and errors stay
// JSON. Heartbeats are comments written by a goroutine of the request
// between the marshaler's writes, so the writer is serialised; a comment
// line may fall between an event's lines, where SSE ignores it.

// sseMarshaler writes stream chunks as events.
type sseMarshaler struct{ runtime.Marshaler }

var (
	_ runtime.Delimited         = (*sseMarshaler)(nil)
	_ runtime.StreamContentType = (*sseMarshaler)(nil)
)

func (m *sseMarshaler) Marshal(v any) ([]byte, error) {
	b, err := m.Marshaler.Marshal(v)
	switch {
	case err != nil:
		return nil, err
	case rest.ErrorChunk(v) != nil:
		return event("error", b), nil
	case rest.ResultChunk(v):
		return event("", b), nil
	}
	return b, nil
}

// event writes one event without its blank line (the delimiter): every
// line of data gets its own "data:" field.
func event(name string, data []byte) []byte {
	var out bytes.Buffer
	if name != "" {
		out.WriteString("event: " + name + "\n")
	}
	for i, line := range bytes.Split(data, []byte("\n")) {
		if i > 0 {
			out.WriteByte('\n')
		}
		out.WriteString("data: ")
		out.Write(line)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

func (m *sseMarshaler) Delimiter() []byte { return []byte("\n") }

func (m *sseMarshaler) ContentType(v any) string {
	if rest.ErrorChunk(v) != nil {
		return EventStream // a stream refused before it began
	}
	return m.Marshaler.ContentType(v)
}

func (m *sseMarshaler) StreamContentType(any) string { return EventStream }

// acceptsEvents reports whether grpc-gateway will pick the SSE marshaler
// for r: it matches Accept values exactly.
func acceptsEvents(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if v == EventStream {
			return true
		}
	}
	return false
}

// sseWriter serialises an event stream's writes and sends heartbeats once
// the stream has begun. It begins with its first message: the REST door
// answers once the stream's gRPC headers have come, and the gateway's
// proxy sends those with the first message (or the error), so nothing
// could be sent earlier. A stream refused by the chain is therefore
// answered with its HTTP status, and EventSource does not retry it.
type sseWriter struct {
	http.ResponseWriter
	heartbeat time.Duration

	mu      sync.Mutex
	started bool
	stop    chan struct{}
	done    chan struct{}
}

func (s *sseWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.ResponseWriter.Write(b)
	if !s.started && err == nil {
		// The first event: the answer has begun, its headers are sent, and
		// from now on only bytes are written, which the lock serialises.
		s.started = true
		if s.heartbeat > 0 {
			s.stop, s.done = make(chan struct{}), make(chan struct{})
			go s.beat()
		}
	}
	return n, err
}

func (s *sseWriter) WriteHeader(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ResponseWriter.WriteHeader(code)
}

func (s *sseWriter) FlushError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return http.NewResponseController(s.ResponseWriter).Flush()
}

func (s *sseWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *sseWriter) beat() {
	defer close(s.done)
	t := time.NewTicker(s.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		_, err := s.ResponseWriter.Write([]byte(": heartbeat\n\n"))
		if err == nil {
			err = http.NewResponseController(s.ResponseWriter).Flush()
		}
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// end stops the heartbeats; the handler has returned.
func (s *sseWriter) end() {
	s.mu.Lock()
	stop, done := s.stop, s.done
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// events serves SSE requests through a serialising writer.
func events(heartbeat time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !acceptsEvents(r) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		s := &sseWriter{ResponseWriter: w, heartbeat: heartbeat}
		defer s.end()
		next.ServeHTTP(s, r)
	})
}
