package web

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/rest"
	"github.com/portico-gw/portico/internal/testutil"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
)

func TestMatchTemplate(t *testing.T) {
	rules := []pathRule{
		{verb: "GET", segments: strings.Split("v1/orders/{id}", "/"), service: "orders"},
		{verb: "GET", segments: strings.Split("v1/orders/{id}:watch", "/"), service: "watch"},
		{verb: "GET", segments: strings.Split("v1/files/{name=**}", "/"), service: "files"},
		{verb: "PATCH", segments: strings.Split("v1/products/{product.id}", "/"), service: "catalog"},
	}
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/v1/orders/ord-1", "orders"},
		{"GET", "/v1/orders/ord-1:watch", "watch"},
		{"GET", "/v1/orders/:watch", ""},
		{"GET", "/v1/orders", ""},
		{"GET", "/v1/orders/ord-1/items", ""},
		{"GET", "/v1/files/a/b/c", "files"},
		{"PATCH", "/v1/products/prd-1", "catalog"},
		{"GET", "/v1/products/prd-1", ""},
		{"POST", "/orders.v1.OrderService/CreateOrder", "orders.v1.OrderService"},
	} {
		if got := serviceOf(rules, tc.method, tc.path); got != tc.want {
			t.Errorf("%s %s: %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestGRPCTimeout(t *testing.T) {
	for _, d := range []time.Duration{time.Nanosecond, 1500 * time.Microsecond, 300 * time.Millisecond, 10 * time.Second, 200 * 24 * time.Hour} {
		v := encodeTimeout(d)
		got, ok := grpcTimeout(v)
		if !ok || got < d || len(v) > 9 {
			t.Errorf("%v: %q reads back as %v %v", d, v, got, ok)
		}
	}
	for _, bad := range []string{"", "5", "5x", "-5m", "123456789m"} {
		if _, ok := grpcTimeout(bad); ok {
			t.Errorf("%q read as a timeout", bad)
		}
	}
}

func TestEvents(t *testing.T) {
	if got := string(event("", []byte(`{"result":1}`))); got != "data: {\"result\":1}\n" {
		t.Errorf("event: %q", got)
	}
	if got := string(event("error", []byte("a\nb"))); got != "event: error\ndata: a\ndata: b\n" {
		t.Errorf("multi-line error event: %q", got)
	}
}

// A heartbeat falls between whole writes only, and stops with the handler.
func TestHeartbeat(t *testing.T) {
	rec := httptest.NewRecorder()
	s := &sseWriter{ResponseWriter: rec, heartbeat: time.Millisecond}
	if _, err := s.Write([]byte("data: 1\n\n")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "a heartbeat", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return strings.Contains(rec.Body.String(), ": heartbeat\n\n")
	})
	done := s.done
	s.end()
	select {
	case <-done:
		// The beating goroutine has returned: no heartbeat can follow.
	default:
		t.Error("end returned with the heartbeats still running")
	}
	if !strings.HasPrefix(rec.Body.String(), "data: 1\n\n") {
		t.Errorf("body %q", rec.Body.String())
	}
}

func TestGRPCWebText(t *testing.T) {
	// Two padded chunks, as a client may send them.
	body := base64.StdEncoding.EncodeToString([]byte("ab")) + base64.StdEncoding.EncodeToString([]byte("cde"))
	r := httptest.NewRequest("POST", "/s.S/M", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/grpc-web-text+proto")
	got, err := fromGRPCWebText(r, 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(got.Body)
	if string(b) != "abcde" || got.Header.Get("Content-Type") != "application/grpc-web+proto" {
		t.Errorf("decoded %q %q", b, got.Header.Get("Content-Type"))
	}
	if _, err := fromGRPCWebText(httptest.NewRequest("POST", "/", strings.NewReader("!!!!")), 1<<10); err == nil {
		t.Error("not base64: no error")
	}
	if r, err := fromGRPCWebText(httptest.NewRequest("POST", "/", strings.NewReader(strings.Repeat("A", 20))), 8); err != nil || r.ContentLength <= 8 {
		t.Errorf("over the limit: %v, length %d, want a length over it", err, r.ContentLength)
	}

	rec := httptest.NewRecorder()
	tw := &textWriter{ResponseWriter: rec}
	tw.Header().Set("Content-Type", "application/grpc-web+proto")
	tw.WriteHeader(http.StatusOK)
	for _, part := range []string{"a", "bcde", "fg"} {
		_, _ = tw.Write([]byte(part))
	}
	tw.finish()
	dec, err := base64.StdEncoding.DecodeString(rec.Body.String())
	if err != nil || string(dec) != "abcdefg" || rec.Header().Get("Content-Type") != "application/grpc-web-text+proto" {
		t.Errorf("encoded %q (%v), content type %q", rec.Body.String(), err, rec.Header().Get("Content-Type"))
	}
}

func TestErrorChunkMarshal(t *testing.T) {
	m := &sseMarshaler{Marshaler: rest.Marshaler()}
	b, err := m.Marshal(map[string]proto.Message{"error": &spb.Status{Code: 5, Message: "gone"}})
	if err != nil || !bytes.HasPrefix(b, []byte("event: error\ndata: {")) || bytes.Contains(b, []byte(`"error"`)) {
		t.Errorf("error chunk: %q %v", b, err)
	}
	if ct := m.ContentType(map[string]proto.Message{"error": &spb.Status{}}); ct != EventStream {
		t.Errorf("error chunk content type %q", ct)
	}
}

// TestServiceOfSplit: serviceOf, which reads segments in place, agrees with
// matching split paths, as it did before, on paths of every shape.
func TestServiceOfSplit(t *testing.T) {
	rules := []pathRule{
		{verb: "GET", segments: strings.Split("v1/orders/{id}", "/"), service: "orders"},
		{verb: "GET", segments: strings.Split("v1/orders/{id}:watch", "/"), service: "watch"},
		{verb: "GET", segments: strings.Split("v1/files/{name=**}", "/"), service: "files"},
		{verb: "GET", segments: strings.Split("v1/products", "/"), service: "catalog"},
		{verb: "GET", segments: strings.Split("{x}", "/"), service: "root"},
	}
	split := func(method, path string) string {
		segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
		if len(segs) == 2 && strings.Contains(segs[0], ".") {
			return segs[0]
		}
		for _, r := range rules {
			if r.verb != method {
				continue
			}
			ok := len(r.segments) == len(segs)
			for i, tm := range r.segments {
				if strings.Contains(tm, "**") {
					ok = true
					break
				}
				if i >= len(segs) {
					ok = false
					break
				}
				s := segs[i]
				if strings.HasPrefix(tm, "{") {
					if end := strings.LastIndex(tm, "}"); end >= 0 && end < len(tm)-1 {
						verb := tm[end+1:]
						if !strings.HasSuffix(s, verb) || len(s) == len(verb) {
							ok = false
							break
						}
					} else if s == "" || strings.Contains(s, ":") && i == len(r.segments)-1 {
						ok = false
						break
					}
					continue
				}
				if tm != s {
					ok = false
					break
				}
			}
			if ok {
				return r.service
			}
		}
		return ""
	}
	for _, path := range []string{"", "/", "//", "/v1", "/v1/", "/v1/orders", "/v1/orders/", "/v1/orders/o1", "/v1/orders/o1/",
		"/v1/orders/o1:watch", "/v1/orders/:watch", "/v1/orders/o:1", "/v1/files", "/v1/files/", "/v1/files/a/b", "/v1/products",
		"/v1/products/", "x", "/x", "/x:y", "/a.B/C", "/a.B/C/D", "/a.B/", "a.B/C"} {
		if got, want := serviceOf(rules, "GET", path), split("GET", path); got != want {
			t.Errorf("%q: %q, split: %q", path, got, want)
		}
	}
}
