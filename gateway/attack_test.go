package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/edge"
	"github.com/portico-gw/portico/gateway/policy"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"github.com/portico-gw/portico/internal/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Attacks on the edge, over real sockets on loopback, each with short
// limits so the test sees them act: every attack is bounded in count and
// time, and its figures are in the test's output.

func attackLimits(c *gateway.Config) {
	c.Limits = edge.Config{RequestReadTimeout: time.Second, BodyTimeout: time.Second, IdleTimeout: time.Second}
	svc := c.Services["catalog.v1.CatalogService"]
	svc.Methods = map[string]gateway.MethodConfig{"GetProduct": {Timeout: 500 * time.Millisecond, MaxTimeout: time.Second}}
	c.Services["catalog.v1.CatalogService"] = svc
}

// rssBytes is the process's resident set, from /proc; 0 where there is none.
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// sampler records the peak of goroutines and RSS while an attack runs.
type sampler struct {
	stop            chan struct{}
	done            chan struct{}
	goroutines, rss int64 // baselines
	peakG, peakRSS  atomic.Int64
}

func sample(t *testing.T) *sampler {
	runtime.GC()
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{}), goroutines: int64(runtime.NumGoroutine()), rss: rssBytes()}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if g := int64(runtime.NumGoroutine()); g > s.peakG.Load() {
				s.peakG.Store(g)
			}
			if r := rssBytes(); r > s.peakRSS.Load() {
				s.peakRSS.Store(r)
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(s.end)
	return s
}

func (s *sampler) end() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

func (s *sampler) report(t *testing.T) (goroutineGrowth, rssGrowthMB int64) {
	s.end()
	goroutineGrowth, rssGrowthMB = s.peakG.Load()-s.goroutines, (s.peakRSS.Load()-s.rss)>>20
	t.Logf("goroutines %d -> peak %d (+%d); RSS %d MB -> peak %d MB (+%d MB)",
		s.goroutines, s.peakG.Load(), goroutineGrowth, s.rss>>20, s.peakRSS.Load()>>20, rssGrowthMB)
	return goroutineGrowth, rssGrowthMB
}

// h2conn is a raw HTTP/2 client connection: what an attacker writes.
type h2conn struct {
	conn net.Conn
	mu   sync.Mutex // writes
	fr   *http2.Framer

	ended, refused atomic.Int64 // streams the server ended with a status, and reset
	goaway         atomic.Bool
}

func dialH2(t *testing.T, addr string) *h2conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &h2conn{conn: conn, fr: http2.NewFramer(conn, conn)}
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	c.write(func() error { return c.fr.WriteSettings() })
	go c.read()
	return c
}

func (c *h2conn) write(fn func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fn()
}

func (c *h2conn) read() {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = c.write(c.fr.WriteSettingsAck)
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = c.write(func() error { return c.fr.WritePing(true, f.Data) })
			}
		case *http2.HeadersFrame:
			if f.StreamEnded() {
				c.ended.Add(1)
			}
		case *http2.RSTStreamFrame:
			c.refused.Add(1)
		case *http2.GoAwayFrame:
			c.goaway.Store(true)
		}
	}
}

// headerBlock encodes the request headers of a gRPC call.
func headerBlock(method string, extra ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	fields := append([]string{":method", "POST", ":scheme", "http", ":path", method, ":authority", "portico",
		"content-type", "application/grpc", "te", "trailers"}, extra...)
	for i := 0; i < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return b.Bytes()
}

// TestAttackHeaderOnlyStreams: 20,000 HEADERS frames and no DATA on one
// connection. At most max_concurrent_streams are served at once, each is
// ended at its read limit, and the gateway's goroutines and memory stay
// bounded.
func TestAttackHeaderOnlyStreams(t *testing.T) {
	w := newWorld(t, false, attackLimits)
	w.startCatalog()
	s := sample(t)
	c := dialH2(t, w.gw.GRPCAddr())
	block := headerBlock("/catalog.v1.CatalogService/GetProduct")
	_ = c.conn.SetWriteDeadline(time.Now().Add(3 * time.Second))
	sent := 0
	for id := uint32(1); sent < 20000; id += 2 {
		if err := c.write(func() error {
			return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true})
		}); err != nil {
			break // the gateway stopped reading: the stream cap holds the rest back
		}
		sent++
	}
	// The streams admitted are ended by the gateway at the route's read
	// limit, one wave of max_concurrent_streams after another.
	testutil.Eventually(t, 20*time.Second, "the gateway to end the admitted header-only streams", func() bool {
		return c.ended.Load() >= edge.DefaultMaxConcurrentStreams
	})
	g, rss := s.report(t)
	t.Logf("sent %d header-only streams; the gateway ended %d with a status and reset %d", sent, c.ended.Load(), c.refused.Load())
	if c.refused.Load() == 0 {
		t.Error("no stream was refused beyond the stream limit")
	}
	if g > 3*edge.DefaultMaxConcurrentStreams {
		t.Errorf("goroutines grew by %d, want at most %d", g, 3*edge.DefaultMaxConcurrentStreams)
	}
	if rss > 64 {
		t.Errorf("RSS grew by %d MB, want under 64", rss)
	}
}

// zeros is an endless body, so 128 clients of 4 MiB cost the client nothing.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestAttackAnonymousBodies: 128 anonymous 4 MiB bodies in parallel to a
// protected route are refused before their bodies are read.
func TestAttackAnonymousBodies(t *testing.T) {
	w := newWorld(t, false)
	w.startCatalog()
	s := sample(t)
	var wg sync.WaitGroup
	var unauthorized, other atomic.Int64
	for range 128 {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", w.base+"/v1/products", io.LimitReader(zeros{}, 4<<20))
			req.ContentLength = 4 << 20
			req.Header.Set("Content-Type", "application/json")
			resp, err := httpClient.Do(req)
			if err != nil {
				other.Add(1)
				return
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				unauthorized.Add(1)
			} else {
				other.Add(1)
			}
		})
	}
	wg.Wait()
	_, rss := s.report(t)
	t.Logf("128 anonymous 4 MiB bodies: %d answered 401, %d otherwise", unauthorized.Load(), other.Load())
	if unauthorized.Load() != 128 {
		t.Errorf("%d of 128 were 401", unauthorized.Load())
	}
	if rss > 64 {
		t.Errorf("RSS grew by %d MB, want under 64", rss)
	}
}

// TestAttackDeadlineCap: a caller's deadline is cut to the route's maximum
// on both doors: the backend sees at most that, and the call ends there.
func TestAttackDeadlineCap(t *testing.T) {
	w := newWorld(t, false, attackLimits)
	slow := &slowCatalog{seen: make(chan time.Duration, 10)}
	w.startHost(w.catalog, func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, slow) })

	ctx, cancel := context.WithTimeout(context.Background(), 99999*time.Hour)
	defer cancel()
	start := time.Now()
	_, err := w.catalogClient().GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"})
	took := time.Since(start)
	seen := <-slow.seen
	t.Logf("grpc: asked for 99999h, the backend saw %v, the call ended after %v with %v", seen.Round(time.Millisecond), took.Round(time.Millisecond), err)
	if status.Code(err) != codes.DeadlineExceeded || seen > time.Second || took > 3*time.Second {
		t.Errorf("grpc: %v after %v, backend saw %v; want DEADLINE_EXCEEDED at the 1s maximum", err, took, seen)
	}

	// A caller that sets no deadline gets the route's timeout (500ms), not
	// its maximum.
	_, err = w.catalogClient().GetProduct(context.Background(), &catalogv1.GetProductRequest{Id: "prd-000001"})
	seen = <-slow.seen
	t.Logf("grpc: no deadline asked, the backend saw %v: %v", seen.Round(time.Millisecond), err)
	if status.Code(err) != codes.DeadlineExceeded || seen > 500*time.Millisecond || seen < 0 {
		t.Errorf("grpc without a deadline: %v, backend saw %v; want the 500ms timeout", err, seen)
	}

	req, _ := http.NewRequest("GET", w.base+"/v1/products/prd-000001", nil)
	req.Header.Set("Grpc-Timeout", "99999999H")
	start = time.Now()
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	seen = <-slow.seen
	t.Logf("rest: asked for 99999999H, the backend saw %v, answered %d after %v", seen.Round(time.Millisecond), resp.StatusCode, time.Since(start).Round(time.Millisecond))
	if resp.StatusCode != http.StatusGatewayTimeout || seen > time.Second {
		t.Errorf("rest: %d, backend saw %v; want 504 at the 1s maximum", resp.StatusCode, seen)
	}
}

// TestAttackHeaders: oversized and too many headers are refused before
// anything is forwarded.
func TestAttackHeaders(t *testing.T) {
	w := newWorld(t, false)
	w.startCatalog()
	do := func(name string, set func(h http.Header)) int {
		req, _ := http.NewRequest("GET", w.base+"/v1/products/prd-000001", nil)
		set(req.Header)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		t.Logf("rest, %s: %d", name, resp.StatusCode)
		return resp.StatusCode
	}
	for name, set := range map[string]func(http.Header){
		"a 900 KB header": func(h http.Header) { h.Set("X-Big", strings.Repeat("a", 900<<10)) },
		"10,000 headers": func(h http.Header) {
			for i := range 10000 {
				h.Set(fmt.Sprintf("X-H-%d", i), "v")
			}
		},
		"150 small headers": func(h http.Header) {
			for i := range 150 {
				h.Set(fmt.Sprintf("X-H-%d", i), "v")
			}
		},
	} {
		if code := do(name, set); code != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("rest, %s: %d, want 431", name, code)
		}
	}

	var kv []string
	for i := range 150 {
		kv = append(kv, fmt.Sprintf("x-h-%d", i), "v")
	}
	_, err := w.catalogClient().GetProduct(metadata.AppendToOutgoingContext(context.Background(), kv...), &catalogv1.GetProductRequest{Id: "prd-000001"})
	t.Logf("grpc, 150 metadata entries: %v", err)
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("grpc, 150 metadata entries: %v, want RESOURCE_EXHAUSTED", err)
	}
	_, err = w.catalogClient().GetProduct(metadata.AppendToOutgoingContext(context.Background(), "x-big", strings.Repeat("a", 900<<10)), &catalogv1.GetProductRequest{Id: "prd-000001"})
	t.Logf("grpc, a 900 KB metadata value: %v", err)
	if err == nil {
		t.Error("grpc, a 900 KB metadata value: accepted")
	}
}

// TestAttackSlowClients: slow bodies and idle connections are closed at
// their limits, on both listeners.
func TestAttackSlowClients(t *testing.T) {
	w := newWorld(t, false, attackLimits)
	w.startCatalog()
	closedWithin := func(conn net.Conn, limit time.Duration) (time.Duration, bool) {
		start := time.Now()
		_ = conn.SetReadDeadline(start.Add(limit))
		_, err := io.Copy(io.Discard, conn) // until the gateway closes it
		return time.Since(start), err == nil
	}
	var wg sync.WaitGroup
	var closed atomic.Int64
	for range 20 {
		wg.Go(func() {
			conn, err := net.Dial("tcp", w.gw.HTTPAddr())
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /v1/products HTTP/1.1\r\nHost: portico\r\nX-Api-Key: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", testAPIKey)
			go func() { // a byte every 300ms, until the gateway gives up
				for range 20 {
					time.Sleep(300 * time.Millisecond)
					if _, err := conn.Write([]byte(" ")); err != nil {
						return
					}
				}
			}()
			if _, ok := closedWithin(conn, 5*time.Second); ok {
				closed.Add(1)
			}
		})
	}
	for range 20 {
		wg.Go(func() {
			conn, err := net.Dial("tcp", w.gw.HTTPAddr())
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET /v1/products/prd-000001 HTTP/1.1\r\nHost: portico\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if _, ok := closedWithin(conn, 5*time.Second); ok {
				closed.Add(1) // idle keep-alive connection closed
			}
		})
	}
	wg.Wait()
	t.Logf("rest: %d of 40 slow-body and idle keep-alive connections closed by the gateway within 5s (limits 1s)", closed.Load())
	if closed.Load() != 40 {
		t.Errorf("%d of 40 connections closed", closed.Load())
	}

	// An idle gRPC connection gets GOAWAY and goes idle.
	conn := dial(t, w.gw.GRPCAddr(), testAPIKey)
	if _, err := catalogv1.NewCatalogServiceClient(conn).GetProduct(context.Background(), &catalogv1.GetProductRequest{Id: "prd-000001"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the idle gRPC connection to be closed", func() bool { return conn.GetState() == connectivity.Idle })
}

// TestAttackStreamWithoutRequest: a stream whose request never comes is
// ended at the read limit with REQUEST_TIMEOUT, and counted.
func TestAttackStreamWithoutRequest(t *testing.T) {
	w := newWorld(t, false, attackLimits)
	w.startCatalog()
	w.startOrders()
	var trailer metadata.MD
	start := time.Now()
	cs, err := w.conn.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true}, "/orders.v1.OrderService/WatchOrder", grpc.Trailer(&trailer))
	if err == nil {
		err = cs.RecvMsg(&ordersv1.WatchOrderResponse{}) // the request is never sent
	}
	got := grpcFailure(err, trailer)
	t.Logf("a stream without its request: %v after %v", got, time.Since(start).Round(time.Millisecond))
	if got.code != codes.DeadlineExceeded || got.reason != policy.ReasonRequestTimeout || got.source != policy.SourceGateway {
		t.Errorf("got %v, want DEADLINE_EXCEEDED/%s from the gateway", got, policy.ReasonRequestTimeout)
	}
	m, _ := scrape(t, w)
	if m[`portico_refused_total{reason="request_timeout"}`] < 1 {
		t.Error("the read limit's refusal is not counted")
	}
}

// TestAdminAnswersOnlyItsHosts: a page served from another name that
// resolves to the admin listener (DNS rebinding) cannot read it.
func TestAdminAnswersOnlyItsHosts(t *testing.T) {
	w := newWorld(t, false, func(c *gateway.Config) { c.AdminHosts = []string{"portico-admin.internal"} })
	for host, want := range map[string]int{
		w.gw.AdminAddr():               http.StatusOK,
		"localhost":                    http.StatusOK,
		"portico-admin.internal:9901":  http.StatusOK,
		"rebind.attacker.example":      http.StatusForbidden,
		"rebind.attacker.example:9901": http.StatusForbidden,
	} {
		req, _ := http.NewRequest("GET", "http://"+w.gw.AdminAddr()+"/routes", nil)
		req.Host = host
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
}
