package edge

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// frameRef is what the scanner should find of a frame.
type frameRef struct {
	typ      http2.FrameType
	streamID uint32
	end      int // offset just past the frame
}

// stream is a byte stream of HTTP/2 frames and where they are.
type stream struct {
	buf    bytes.Buffer
	fr     *http2.Framer
	frames []frameRef
}

func newStream() *stream {
	s := &stream{}
	s.fr = http2.NewFramer(&s.buf, nil)
	return s
}

// add writes one frame with write and records it.
func (s *stream) add(t testing.TB, typ http2.FrameType, id uint32, write func(fr *http2.Framer) error) {
	t.Helper()
	if err := write(s.fr); err != nil {
		t.Fatal(err)
	}
	s.frames = append(s.frames, frameRef{typ, id, s.buf.Len()})
}

// serverFrames is n frames such as grpc-go writes, SETTINGS first, with
// payloads from empty to the largest frame.
func serverFrames(t testing.TB, rng *rand.Rand, n int) *stream {
	s := newStream()
	s.add(t, http2.FrameSettings, 0, func(fr *http2.Framer) error {
		return fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
	})
	for len(s.frames) < n {
		id := uint32(rng.IntN(1000))*2 + 1
		switch rng.IntN(6) {
		case 0:
			s.add(t, http2.FrameHeaders, id, func(fr *http2.Framer) error {
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: bytes.Repeat([]byte{0x88}, rng.IntN(300)), EndHeaders: true})
			})
		case 1, 2:
			size := []int{0, 1, 8, 9, 10, 5000, 16384}[rng.IntN(7)]
			s.add(t, http2.FrameData, id, func(fr *http2.Framer) error { return fr.WriteData(id, false, make([]byte, size)) })
		case 3:
			s.add(t, http2.FrameWindowUpdate, 0, func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, 1<<16) })
		case 4:
			s.add(t, http2.FramePing, 0, func(fr *http2.Framer) error { return fr.WritePing(true, [8]byte{1}) })
		case 5:
			s.add(t, http2.FrameRSTStream, id, func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeCancel) })
		}
	}
	return s
}

// chunks splits b at random, pieces of 1 byte to a few frames.
func chunks(rng *rand.Rand, b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n := min(len(b), 1+rng.IntN([]int{2, 20, 700, 40000}[rng.IntN(4)]))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// TestFrameScannerSplits: the scanner finds every frame header of a stream
// however the stream is cut: a byte at a time, in random pieces, whole.
func TestFrameScannerSplits(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := newStream()
	s.buf.WriteString(http2.ClientPreface)
	s.add(t, http2.FrameSettings, 0, func(fr *http2.Framer) error { return fr.WriteSettings() })
	s.add(t, http2.FrameHeaders, 1, func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82, 0x86}, EndHeaders: false})
	})
	s.add(t, http2.FrameContinuation, 1, func(fr *http2.Framer) error { return fr.WriteContinuation(1, true, []byte{0x84}) })
	s.add(t, http2.FrameData, 1, func(fr *http2.Framer) error { return fr.WriteDataPadded(1, true, []byte("hello"), make([]byte, 200)) })
	s.add(t, http2.FramePriority, 3, func(fr *http2.Framer) error {
		return fr.WritePriority(3, http2.PriorityParam{StreamDep: 1, Weight: 9})
	})
	s.add(t, http2.FrameType(0x20), 5, func(fr *http2.Framer) error { return fr.WriteRawFrame(0x20, 0, 5, make([]byte, 70000)) })
	s.add(t, http2.FrameRSTStream, 1<<31-1, func(fr *http2.Framer) error { return fr.WriteRSTStream(1<<31-1, http2.ErrCodeCancel) })
	s.add(t, http2.FrameSettings, 0, func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
	for range 50 {
		s.add(t, http2.FrameHeaders, 7, func(fr *http2.Framer) error {
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 7, BlockFragment: []byte{0x82}, EndHeaders: true})
		})
		s.add(t, http2.FrameRSTStream, 7, func(fr *http2.Framer) error { return fr.WriteRSTStream(7, http2.ErrCodeCancel) })
	}
	all := s.buf.Bytes()

	find := func(pieces [][]byte) []frameRef {
		sc := frameScanner{skip: len(http2.ClientPreface)}
		var got []frameRef
		off := 0
		for _, p := range pieces {
			for len(p) > 0 {
				n, ok := sc.next(p)
				p, off = p[n:], off+n
				if ok {
					got = append(got, frameRef{sc.typ(), sc.streamID(), off + sc.skip})
				}
			}
		}
		return got
	}
	bytewise := make([][]byte, len(all))
	for i := range all {
		bytewise[i] = all[i : i+1]
	}
	cases := map[string][][]byte{"whole": {all}, "a byte at a time": bytewise}
	for i := range 200 {
		cases[fmt.Sprintf("random pieces %d", i)] = chunks(rng, all)
	}
	for name, pieces := range cases {
		if got := find(pieces); !slices.Equal(got, s.frames) {
			t.Errorf("%s: found %d frames, want %d:\n%v\n%v", name, len(got), len(s.frames), got, s.frames)
		}
	}

	// Boundaries, as the write side sees them: after each frame, only there.
	out := serverFrames(t, rng, 300)
	var ends []int
	for _, f := range out.frames {
		ends = append(ends, f.end)
	}
	for round := range 50 {
		var sc frameScanner
		var got []int
		off := 0
		pieces := chunks(rng, out.buf.Bytes())
		if round == 0 {
			pieces = nil
			for i := range out.buf.Len() {
				pieces = append(pieces, out.buf.Bytes()[i:i+1])
			}
		}
		for _, p := range pieces {
			for len(p) > 0 {
				k := sc.toBoundary(p)
				p, off = p[k:], off+k
				if sc.atBoundary() {
					got = append(got, off)
					if len(p) > 0 { // step off the boundary
						n, _ := sc.next(p)
						p, off = p[n:], off+n
					}
				}
			}
		}
		got = slices.Compact(got) // a boundary met at the end of a piece is met again at the start of the next
		if !slices.Equal(got, ends) {
			t.Fatalf("round %d: boundaries %v, want %v", round, got, ends)
		}
	}
}

// fakeConn is a net.Conn whose reads come from a queue of chunks and whose
// writes are recorded.
type fakeConn struct {
	net.Conn // nil: a method the guard should not call panics
	mu       sync.Mutex
	in       [][]byte
	out      bytes.Buffer
	closed   int
	closedAt time.Time
}

func (f *fakeConn) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.in) == 0 {
		return 0, io.EOF
	}
	n := copy(p, f.in[0])
	if f.in[0] = f.in[0][n:]; len(f.in[0]) == 0 {
		f.in = f.in[1:]
	}
	return n, nil
}

func (f *fakeConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed > 0 {
		return 0, net.ErrClosed
	}
	return f.out.Write(p)
}

func (f *fakeConn) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed++; f.closed == 1 {
		f.closedAt = time.Now()
	}
	return nil
}

func (f *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (f *fakeConn) SetWriteDeadline(time.Time) error { return nil }

func (f *fakeConn) feed(b ...[]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.in = append(f.in, b...)
}

func (f *fakeConn) output() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytes.Clone(f.out.Bytes())
}

func (f *fakeConn) closes() (int, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed, f.closedAt
}

// flood is n HEADERS + RST_STREAM pairs, from stream first on.
func flood(t testing.TB, first uint32, n int) []byte {
	s := newStream()
	for id := first; id < first+2*uint32(n); id += 2 {
		s.add(t, http2.FrameHeaders, id, func(fr *http2.Framer) error {
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: []byte{0x83, 0x86}, EndHeaders: true})
		})
		s.add(t, http2.FrameRSTStream, id, func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeCancel) })
	}
	return s.buf.Bytes()
}

func clientStart(t testing.TB) []byte {
	s := newStream()
	s.buf.WriteString(http2.ClientPreface)
	s.add(t, http2.FrameSettings, 0, func(fr *http2.Framer) error { return fr.WriteSettings() })
	return s.buf.Bytes()
}

// readAll reads c until it fails and returns what it read and the error.
func readAll(c net.Conn) ([]byte, error) {
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return got, err
		}
	}
}

// goAway is a GOAWAY read back.
type goAway struct {
	lastID uint32
	code   http2.ErrCode
	debug  string
}

// parse reads out as a sequence of frames: how many, and the last one if
// it is a GOAWAY.
func parse(t *testing.T, out []byte) (n int, last *goAway) {
	t.Helper()
	fr := http2.NewFramer(nil, bytes.NewReader(out))
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			return n, last
		}
		if err != nil {
			t.Fatalf("frame %d of the output: %v", n+1, err)
		}
		n, last = n+1, nil
		if g, ok := f.(*http2.GoAwayFrame); ok {
			last = &goAway{g.LastStreamID, g.ErrCode, string(g.DebugData())}
		}
	}
}

// TestResetLimit: resets up to the limit in a window pass, the first over
// it gets GOAWAY (ENHANCE_YOUR_CALM, last stream the highest the client
// opened); the window moves on.
func TestResetLimit(t *testing.T) {
	var floods atomic.Int64
	g := &resetGuard{limit: 10, window: 300 * time.Millisecond, linger: 50 * time.Millisecond, onFlood: func() { floods.Add(1) }}
	f := &fakeConn{}
	c := g.conn(f)
	rng := rand.New(rand.NewPCG(3, 4))
	read := func(b []byte) error {
		f.feed(chunks(rng, b)...)
		_, err := readAll(c)
		return err
	}
	// The server's preface, as grpc-go writes it before it reads.
	if _, err := c.Write(serverFrames(t, rng, 1).buf.Bytes()); err != nil {
		t.Fatal(err)
	}

	if err := read(append(clientStart(t), flood(t, 1, 10)...)); err != io.EOF {
		t.Fatal(err)
	}
	time.Sleep(g.window)
	if err := read(flood(t, 21, 10)); err != io.EOF || floods.Load() != 0 {
		t.Fatalf("20 resets in two windows: %v, %d floods", err, floods.Load())
	}
	err := read(flood(t, 41, 1))
	if !errors.Is(err, errRapidReset) || floods.Load() != 1 {
		t.Fatalf("the 11th reset in a window: %v, %d floods", err, floods.Load())
	}
	n, goAway := parse(t, f.output())
	if n != 2 || goAway == nil || goAway.code != http2.ErrCodeEnhanceYourCalm || goAway.lastID != 41 || goAway.debug != goAwayDebug {
		t.Fatalf("output: %d frames ending %+v, want SETTINGS, GOAWAY ENHANCE_YOUR_CALM last stream 41", n, goAway)
	}
	if _, err := c.Write([]byte{0}); !errors.Is(err, errRapidReset) {
		t.Errorf("a write after the GOAWAY: %v", err)
	}
	// grpc-go closes at once; the socket is closed by the flood's timer.
	start := time.Now()
	_ = c.Close()
	if n, _ := f.closes(); n != 0 {
		t.Fatal("closed before the GOAWAY's linger")
	}
	for n, _ := f.closes(); n == 0 && time.Since(start) < 5*time.Second; n, _ = f.closes() {
		time.Sleep(g.linger / 10)
	}
	if n, at := f.closes(); n != 1 {
		t.Fatalf("socket closed %d times, %v after grpc-go's close", n, at.Sub(start))
	}
}

// TestGoAwayAtFrameBoundary: whenever the flood comes, and however
// grpc-go's writes cut its frames, the output is grpc-go's frames in order,
// the one in progress completed, then the GOAWAY, and nothing after.
func TestGoAwayAtFrameBoundary(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for round := range 500 {
		f := &fakeConn{}
		// A linger long enough never to close the socket before the
		// frame in progress is written.
		c := (&resetGuard{limit: 1, window: time.Hour, linger: time.Hour, onFlood: func() {}}).conn(f)
		out := serverFrames(t, rng, 1+rng.IntN(40))
		pieces := chunks(rng, out.buf.Bytes())
		at := rng.IntN(len(pieces) + 1) // the flood comes before piece at
		written, floodAt := 0, -1
		for i, p := range pieces {
			if i == at {
				f.feed(clientStart(t), flood(t, 1, 2))
				if _, err := readAll(c); err != io.EOF && !errors.Is(err, errRapidReset) {
					t.Fatal(err)
				}
				floodAt = written
			}
			n, err := c.Write(p)
			written += n
			if err != nil {
				break
			}
		}
		if floodAt < 0 { // after the last piece
			f.feed(clientStart(t), flood(t, 1, 2))
			_, _ = readAll(c)
			floodAt = written
		}
		// The GOAWAY follows every frame begun before the flood, and at
		// least the server's preface.
		want := 1 // frames; frame i begins where frame i-1 ends
		for want < len(out.frames) && out.frames[want-1].end < floodAt {
			want++
		}
		n, goAway := parse(t, f.output())
		if goAway == nil || n != want+1 || goAway.lastID != 3 || goAway.code != http2.ErrCodeEnhanceYourCalm || goAway.debug != goAwayDebug {
			t.Fatalf("round %d (flood after %d bytes, pieces %d): %d frames ending %+v, want %d frames then GOAWAY last stream 3",
				round, floodAt, len(pieces), n, goAway, want)
		}
		if !bytes.HasPrefix(out.buf.Bytes(), f.output()[:out.frames[want-1].end]) {
			t.Fatalf("round %d: grpc-go's frames changed", round)
		}
	}
}

// refusals reads portico_refused_total{reason} from reg.
func refusals(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == "portico_refused_total" && l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// selfSigned is a TLS certificate for 127.0.0.1.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestGuardOverTCP: the guard on a real socket, in the clear and above TLS
// (GRPCCredentials, as grpc-go's server uses credentials), with a writer and
// a reader goroutine on the server side as grpc-go has (the writer cutting
// its frames anywhere), and a client flooding while it reads: the client
// reads whole frames, then the GOAWAY, then the end of the connection,
// which comes after the linger though the server side "closes" at once.
// The refusal is counted once, in the edge's counter.
func TestGuardOverTCP(t *testing.T) {
	cert := selfSigned(t)
	for _, secure := range []bool{false, true} {
		t.Run(map[bool]string{false: "cleartext", true: "TLS"}[secure], func(t *testing.T) {
			reg := prometheus.NewRegistry()
			e, err := New(Config{MaxResetsPerSecond: new(100)}, nil, reg)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ln := e.GRPCListener(raw)
			defer ln.Close()
			creds := e.GRPCCredentials(insecure.NewCredentials())
			if secure {
				creds = e.GRPCCredentials(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}))
			}

			accepted := make(chan net.Conn, 1)
			go func() { // grpc-go's accept and handshake
				defer close(accepted)
				c, err := ln.Accept()
				if err != nil {
					t.Error(err)
					return
				}
				if c, _, err = creds.ServerHandshake(c); err != nil {
					t.Error(err)
					return
				}
				accepted <- c
			}()
			var client net.Conn
			if client, err = net.Dial("tcp", raw.Addr().String()); err != nil {
				t.Fatal(err)
			}
			if secure {
				client = tls.Client(client, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
			}
			defer client.Close()
			var wg sync.WaitGroup
			wg.Go(func() { // the flood; with TLS, its first write makes the handshake
				_, _ = client.Write(clientStart(t))
				for id := uint32(1); ; id += 2000 {
					if _, err := client.Write(flood(t, id, 1000)); err != nil {
						return
					}
				}
			})
			srv, ok := <-accepted
			if !ok {
				return
			}
			var closedAt atomic.Int64
			wg.Go(func() { // grpc-go's writer
				rng := rand.New(rand.NewPCG(7, 8))
				for {
					for _, p := range chunks(rng, serverFrames(t, rng, 50).buf.Bytes()) {
						if _, err := srv.Write(p); err != nil {
							return
						}
					}
				}
			})
			wg.Go(func() { // grpc-go's reader: on an error, it closes the transport
				_, err := readAll(srv)
				if !errors.Is(err, errRapidReset) {
					t.Errorf("server read: %v, want errRapidReset", err)
				}
				_ = srv.Close()
				closedAt.Store(time.Now().UnixNano())
			})

			_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := readAll(client)
			ended := time.Now()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the connection was not closed")
			}
			_ = client.Close()
			wg.Wait()
			n, goAway := parse(t, got)
			t.Logf("the client read %d frames (%d bytes), the last %+v, then %v, %v after the server side's close",
				n, len(got), goAway, err, time.Duration(ended.UnixNano()-closedAt.Load()).Round(time.Millisecond))
			if goAway == nil || goAway.code != http2.ErrCodeEnhanceYourCalm || goAway.debug != goAwayDebug || goAway.lastID%2 != 1 {
				t.Errorf("the output ends with %+v, want GOAWAY ENHANCE_YOUR_CALM %q", goAway, goAwayDebug)
			}
			if wait := time.Duration(ended.UnixNano() - closedAt.Load()); wait < goAwayLinger/2 {
				t.Errorf("the socket closed %v after the server side's close, want about %v later", wait, goAwayLinger)
			}
			if got := refusals(t, reg, "rapid_reset"); got != 1 {
				t.Errorf("portico_refused_total{reason=rapid_reset} = %v, want 1", got)
			}
		})
	}
}

// TestGuardStandsAside: a connection that does not open with the client
// preface in the clear (TLS, before GRPCCredentials' guard takes over) is
// neither counted nor written to, whatever its bytes look like.
func TestGuardStandsAside(t *testing.T) {
	var floods atomic.Int64
	f := &fakeConn{}
	c := (&resetGuard{limit: 1, window: time.Hour, linger: time.Hour, onFlood: func() { floods.Add(1) }}).conn(f)
	hello := []byte{0x16, 0x03, 0x01, 0x00, 0x20} // a TLS record header
	f.feed(hello, clientStart(t)[len(http2.ClientPreface):], flood(t, 1, 100))
	if _, err := readAll(c); err != io.EOF || floods.Load() != 0 {
		t.Fatalf("read: %v, %d floods; want io.EOF and none", err, floods.Load())
	}
	for _, p := range chunks(rand.New(rand.NewPCG(9, 9)), flood(t, 1, 100)) {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(f.output(), flood(t, 1, 100)) {
		t.Error("the output is not what was written")
	}
	_ = c.Close()
	if n, _ := f.closes(); n != 1 {
		t.Errorf("closed %d times, want 1 at once", n)
	}
}

// TestResetLimitConfig: unset is 10 per allowed stream, 0 turns the guard
// off, a negative limit is refused.
func TestResetLimitConfig(t *testing.T) {
	if got := *(Config{}).WithDefaults().MaxResetsPerSecond; got != 1000 {
		t.Errorf("default %d, want 1000", got)
	}
	if got := *(Config{MaxConcurrentStreams: 20}).WithDefaults().MaxResetsPerSecond; got != 200 {
		t.Errorf("default with 20 streams: %d, want 200", got)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	e, err := New(Config{MaxResetsPerSecond: new(0)}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if _, guarded := e.GRPCListener(raw).(guardedListener); guarded {
		t.Error("max_resets_per_second 0: the guard is on")
	}
	if _, err := New(Config{MaxResetsPerSecond: new(-1)}, nil, prometheus.NewRegistry()); err == nil {
		t.Error("max_resets_per_second -1 accepted")
	}
}
