package gateway_test

import (
	"bufio"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/edge"
	"github.com/portico-gw/portico/gateway/policy"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// resetFlooder is a raw HTTP/2 client that opens and resets streams as
// fast as it can (CVE-2023-44487), batching its frames as an attacker
// would, and records how the gateway answers.
type resetFlooder struct {
	conn net.Conn
	mu   sync.Mutex // writes
	bw   *bufio.Writer
	fr   *http2.Framer
	sent atomic.Int64 // pairs written

	// Written by the reader before it closes done.
	goAway       *http2.GoAwayFrame // its header and debug data dropped
	debug        string
	goAwayAt     time.Time
	sentAtGoAway int64
	readErr      error
	closedAt     time.Time
	gotGoAway    atomic.Bool
	done         chan struct{} // closed when the connection ends
}

func dialFlooder(t *testing.T, addr string) *resetFlooder {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &resetFlooder{conn: conn, bw: bufio.NewWriterSize(conn, 64<<10), done: make(chan struct{})}
	c.fr = http2.NewFramer(c.bw, conn)
	if err := c.write(func() error {
		if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
			return err
		}
		return c.fr.WriteSettings()
	}); err != nil {
		t.Fatal(err)
	}
	go c.read()
	return c
}

func (c *resetFlooder) write(fn func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := fn(); err != nil {
		return err
	}
	return c.bw.Flush()
}

func (c *resetFlooder) read() {
	defer close(c.done)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.readErr, c.closedAt = err, time.Now()
			return
		}
		// Acks wait for the flood's writes, which may be stuck: the reader
		// must not.
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				go c.write(c.fr.WriteSettingsAck)
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				data := f.Data
				go c.write(func() error { return c.fr.WritePing(true, data) })
			}
		case *http2.GoAwayFrame:
			if c.goAway == nil {
				c.goAwayAt, c.sentAtGoAway = time.Now(), c.sent.Load()
				c.goAway, c.debug = &http2.GoAwayFrame{LastStreamID: f.LastStreamID, ErrCode: f.ErrCode}, string(f.DebugData())
				c.gotGoAway.Store(true)
			}
		}
	}
}

// TestAttackRapidReset: HEADERS + RST_STREAM pairs as fast as one
// connection takes them (at most 100,000 pairs or 10s). The gateway sends
// that connection GOAWAY (ENHANCE_YOUR_CALM, "too many stream resets") and
// closes it, counts the refusal, and goes on serving other clients.
func TestAttackRapidReset(t *testing.T) {
	w := newWorld(t, false)
	w.startCatalog()
	call := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := w.catalogClient().GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"}); err != nil {
			t.Fatalf("a well-behaved client %s: %v", what, err)
		}
	}
	call("before the attack")
	s := sample(t)

	c := dialFlooder(t, w.gw.GRPCAddr())
	block := headerBlock("/catalog.v1.CatalogService/GetProduct")
	const maxPairs, batch = 100000, 64
	deadline := time.Now().Add(10 * time.Second)
	_ = c.conn.SetWriteDeadline(deadline)
	start := time.Now()
	id := uint32(1)
	for c.sent.Load() < maxPairs && time.Now().Before(deadline) && !c.gotGoAway.Load() {
		if err := c.write(func() error {
			for range batch {
				if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true}); err != nil {
					return err
				}
				if err := c.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
					return err
				}
				id += 2
			}
			return nil
		}); err != nil {
			break // the gateway closed the connection
		}
		c.sent.Add(batch)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection is still open 10s after the flood")
	}
	g, _ := s.report(t)
	if c.goAway == nil {
		t.Fatalf("no GOAWAY after %d pairs in %v; the connection ended with %v", c.sent.Load(), time.Since(start).Round(time.Millisecond), c.readErr)
	}
	took := c.goAwayAt.Sub(start)
	t.Logf("GOAWAY %v (last stream %d: the gateway had read %d pairs; %q) %v after the flood began, %d pairs written by then (%.0f pairs/s); "+
		"the connection ended (%v) %v after the GOAWAY; %d pairs written in all",
		c.goAway.ErrCode, c.goAway.LastStreamID, (c.goAway.LastStreamID+1)/2, c.debug, took.Round(time.Millisecond), c.sentAtGoAway,
		float64(c.sentAtGoAway)/took.Seconds(), c.readErr, c.closedAt.Sub(c.goAwayAt).Round(time.Millisecond), c.sent.Load())
	if c.goAway.ErrCode != http2.ErrCodeEnhanceYourCalm || c.debug != "too many stream resets" {
		t.Errorf("GOAWAY %v %q, want ENHANCE_YOUR_CALM \"too many stream resets\"", c.goAway.ErrCode, c.debug)
	}
	if c.goAway.LastStreamID%2 != 1 || c.goAway.LastStreamID >= id {
		t.Errorf("GOAWAY last stream %d, want a stream the client opened (below %d)", c.goAway.LastStreamID, id)
	}
	if g > 3*edge.DefaultMaxConcurrentStreams {
		t.Errorf("goroutines grew by %d, want at most %d", g, 3*edge.DefaultMaxConcurrentStreams)
	}
	m, _ := scrape(t, w)
	if got := m[`portico_refused_total{reason="rapid_reset"}`]; got != 1 {
		t.Errorf("portico_refused_total{reason=\"rapid_reset\"} = %v, want 1", got)
	}
	call("after the attack")
}

// stalledCatalog answers GetProduct only when the call is over: a backend
// that has stopped answering.
type stalledCatalog struct {
	catalogv1.UnimplementedCatalogServiceServer
}

func (stalledCatalog) GetProduct(ctx context.Context, _ *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestRapidResetSparesTimeouts: a client whose every call expires at its
// 200ms deadline against a stalled backend, with all of its connection's
// stream slots busy, resets about 500 streams a second: half the default
// limit. It is not cut off.
func TestRapidResetSparesTimeouts(t *testing.T) {
	w := newWorld(t, false, func(c *gateway.Config) {
		high := &policy.RateLimit{Requests: 1 << 20, Period: time.Second, Burst: 1 << 20}
		sc := c.Services["catalog.v1.CatalogService"]
		sc.RateLimit = high
		c.Services["catalog.v1.CatalogService"] = sc
	})
	w.startHost(w.catalog, func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, stalledCatalog{}) })
	c := w.catalogClient()
	const callers, deadline, run = edge.DefaultMaxConcurrentStreams, 200 * time.Millisecond, 3 * time.Second
	var calls, expired atomic.Int64
	other := make(chan error, callers)
	end := time.Now().Add(run)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for time.Now().Before(end) {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				_, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"})
				cancel()
				calls.Add(1)
				if status.Code(err) == codes.DeadlineExceeded {
					expired.Add(1)
				} else {
					select {
					case other <- err:
					default:
					}
				}
			}
		})
	}
	wg.Wait()
	close(other)
	t.Logf("%d calls in %v, %d expired at their %v deadline (%.0f a second)", calls.Load(), run, expired.Load(), deadline, float64(expired.Load())/run.Seconds())
	for err := range other {
		t.Errorf("a call ended otherwise: %v", err)
	}
	m, _ := scrape(t, w)
	if got := m[`portico_refused_total{reason="rapid_reset"}`]; got != 0 {
		t.Errorf("portico_refused_total{reason=\"rapid_reset\"} = %v, want 0", got)
	}
}
