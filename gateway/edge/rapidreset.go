package edge

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/credentials"
)

// The rapid-reset guard of the gRPC listener.
//
// Rapid reset (CVE-2023-44487) is a client opening a stream and resetting
// it at once, over and over: each HEADERS + RST_STREAM pair costs the
// server a stream's HPACK decoding, setup and teardown, and costs the
// client nothing, since a reset stream no longer counts against
// max_concurrent_streams. grpc-go (v1.85) bounds the harm with the handler
// quota that MaxConcurrentStreams turns on: no more handlers run per
// connection than that, and its reader waits for a free one. It never
// tells the client to stop, though: the flood goes on for as long as the
// client likes, tens of thousands of streams a second on one connection.
// net/http, nginx, Envoy and HAProxy close such a connection (with GOAWAY,
// as HTTP/2 has it). grpc-go has no way to do that for one connection: no API
// drains a single connection (GracefulStop drains them all), and the tap
// sees streams as they open, never their resets. So the guard sits under
// grpc-go, on the net.Conn it reads and writes.
//
// It parses the frames of both directions, only their 9-byte headers
// (payloads are skipped by length; no copy, no allocation per frame):
//   - the client's, after its 24-byte preface, to count RST_STREAM frames
//     and to know the highest stream the client opened, which the GOAWAY
//     names as the last one the server may have acted on;
//   - grpc-go's, because the GOAWAY goes into grpc-go's byte stream.
//     grpc-go's buffered writer flushes whenever its buffer is full, in
//     the middle of a frame as often as not, so a frame written between two
//     of its Writes would corrupt both. The guard follows where grpc-go's
//     frames end (its preface is a SETTINGS frame, and frames follow back
//     to back) and writes the GOAWAY only there, under the lock that
//     serializes grpc-go's writes: at once if grpc-go is between frames,
//     else right after the Write that ends the frame in progress.
//
// After the GOAWAY grpc-go reads and writes errRapidReset, so it closes
// its transport and cancels the connection's streams at once. The socket
// itself is closed linger after the flood was seen, as grpc-go does after
// its own GOAWAYs: closed at once, with the client's flood unread in the
// receive buffer, the kernel would answer with RST, which can destroy the
// GOAWAY before the client reads it. That timer is the only cost beyond a
// few words per connection, and only a flooding connection pays it: no
// goroutine per connection.
//
// Under TLS the frames are readable only above the handshake, which
// grpc-go's credentials make after the listener has handed over the
// connection. So the guard of GRPCListener checks that a connection opens
// with the client preface in the clear and, if it does not (a TLS
// ClientHello, say), stands aside for good; GRPCCredentials puts a guard on
// the connection the credentials return, above TLS.
//
// The default limit, 10 resets a second per allowed concurrent stream
// (1,000/s at the default 100 streams), is one no legitimate client
// reaches. A client can only reset streams it has opened, and it may hold
// at most max_concurrent_streams open, so R resets a second mean that,
// with every one of its stream slots busy all the time, its reset streams
// lived max_concurrent_streams/R seconds on average: 100 ms at the default.
// Legitimate resets are cancellations and expired client deadlines: a
// client whose 200 ms deadlines all expire against a stalled backend, with
// its stream slots all busy, resets 500 a second (2 x max_concurrent_streams
// would cut it off, and it has done nothing wrong). A flood resets tens of
// thousands a second and trips the limit within milliseconds
// (gateway/attack_rapidreset_test.go logs the figures).

const (
	// resetWindow is the window the resets are counted in.
	resetWindow = time.Second
	// goAwayLinger is how long a flooded socket stays open after the
	// flood is seen: time for the GOAWAY to reach the client.
	goAwayLinger = time.Second
	// goAwayDebug is the GOAWAY's debug data.
	goAwayDebug = "too many stream resets"

	frameHeaderLen = 9
)

// errRapidReset is what grpc-go reads and writes on a connection once it
// has been sent GOAWAY for a flood.
var errRapidReset = errors.New("edge: connection closed after a rapid-reset flood")

// resetGuard is the policy the connections of one listener share.
type resetGuard struct {
	limit   int           // RST_STREAM frames per window; more is a flood
	window  time.Duration // default resetWindow
	linger  time.Duration // from the flood to the socket's close; default goAwayLinger
	onFlood func()        // counts the refusal
}

// guardResets wraps the connections l accepts with g.
func guardResets(l net.Listener, g resetGuard) net.Listener {
	if g.window <= 0 {
		g.window = resetWindow
	}
	if g.linger <= 0 {
		g.linger = goAwayLinger
	}
	return guardedListener{Listener: l, g: &g}
}

type guardedListener struct {
	net.Listener
	g *resetGuard
}

func (l guardedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.g.conn(c), nil
}

func (g *resetGuard) conn(c net.Conn) *guardedConn {
	return &guardedConn{Conn: c, g: g}
}

// GRPCCredentials is c, the gRPC server's transport credentials, with the
// rapid-reset guard on the connections it secures: on a TLS connection the
// guard of GRPCListener sees ciphertext and stands aside, and this one
// reads above TLS. Connections that did not come through GRPCListener (an
// in-memory one, say) are left as c returns them, and so are those c
// returns as they were (insecure credentials).
func (e *Edge) GRPCCredentials(c credentials.TransportCredentials) credentials.TransportCredentials {
	return guardedCreds{c}
}

type guardedCreds struct {
	credentials.TransportCredentials
}

var _ credentials.TransportCredentials = guardedCreds{}

func (c guardedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	raw, ok := conn.(*guardedConn)
	if err != nil || !ok || out == conn {
		return out, info, err
	}
	return raw.g.conn(out), info, nil
}

func (c guardedCreds) Clone() credentials.TransportCredentials {
	return guardedCreds{c.TransportCredentials.Clone()}
}

// The GOAWAY's progress, under guardedConn.wmu.
const (
	goAwayNone    = iota
	goAwayPending // a flood, seen while grpc-go had a frame half written
	goAwaySent
)

// guardedConn is one client connection under the guard.
type guardedConn struct {
	net.Conn
	g *resetGuard

	// The read side, touched only in Read: grpc-go reads a connection
	// from one goroutine at a time.
	preface int // bytes of the client preface read
	in      frameScanner
	resets  int // RST_STREAM frames in the window begun at since
	since   time.Time
	tripped bool // the flood is answered: stop counting

	aside   atomic.Bool   // the connection is not HTTP/2 in the clear: hands off
	lastID  atomic.Uint32 // the highest stream ID of the client's HEADERS
	flooded atomic.Bool   // the socket's close is the flood timer's
	sent    atomic.Bool   // GOAWAY written: grpc-go reads errRapidReset

	wmu    sync.Mutex // serializes grpc-go's writes with the GOAWAY
	out    frameScanner
	goAway int
}

var (
	_ net.Listener = guardedListener{}
	_ net.Conn     = (*guardedConn)(nil)
)

func (c *guardedConn) Read(p []byte) (int, error) {
	if c.sent.Load() {
		return 0, errRapidReset
	}
	n, err := c.Conn.Read(p)
	if err != nil && c.sent.Load() {
		err = errRapidReset // woken by writeGoAway
	}
	if !c.aside.Load() && c.scanIn(p[:n]) {
		c.flood()
		if c.sent.Load() {
			return 0, errRapidReset // grpc-go need not decode the rest
		}
	}
	return n, err
}

// scanIn follows the client's frames in b and reports whether they took
// the connection over its limit.
func (c *guardedConn) scanIn(b []byte) (flood bool) {
	if want := http2.ClientPreface; c.preface < len(want) {
		n := min(len(b), len(want)-c.preface)
		if string(b[:n]) != want[c.preface:c.preface+n] {
			c.aside.Store(true)
			return false
		}
		c.preface += n
		b = b[n:]
	}
	for len(b) > 0 {
		n, ok := c.in.next(b)
		b = b[n:]
		if !ok {
			continue
		}
		switch c.in.typ() {
		case http2.FrameHeaders:
			if id := c.in.streamID(); id > c.lastID.Load() {
				c.lastID.Store(id)
			}
		case http2.FrameRSTStream:
			if c.countReset() {
				flood = true
			}
		}
	}
	return flood
}

// countReset counts one RST_STREAM and reports whether it is the first
// over the limit. The window is fixed and begins at its first reset, so
// the clock is read about twice per window, never per frame.
func (c *guardedConn) countReset() bool {
	if c.tripped {
		return false
	}
	c.resets++
	switch {
	case c.resets == 1:
		c.since = time.Now()
	case c.resets > c.g.limit:
		now := time.Now()
		if now.Sub(c.since) >= c.g.window {
			c.resets, c.since = 1, now
			return false
		}
		c.tripped = true
		return true
	}
	return false
}

// flood answers a flood: GOAWAY now if grpc-go is between frames, else
// right after the Write that ends its frame in progress. The socket is
// closed linger from now whatever happens, GOAWAY or not.
func (c *guardedConn) flood() {
	c.g.onFlood()
	c.flooded.Store(true)
	time.AfterFunc(c.g.linger, func() { _ = c.Conn.Close() })
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.goAway = goAwayPending
	if c.out.atBoundary() {
		c.writeGoAway()
	}
}

// writeGoAway writes the GOAWAY, at a frame boundary of grpc-go's output,
// with wmu held.
func (c *guardedConn) writeGoAway() {
	c.goAway = goAwaySent
	c.sent.Store(true)
	var b bytes.Buffer
	_ = http2.NewFramer(&b, nil).WriteGoAway(c.lastID.Load(), http2.ErrCodeEnhanceYourCalm, []byte(goAwayDebug))
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.g.linger))
	_, _ = c.Conn.Write(b.Bytes())
	// Wake grpc-go's reader, so that it reads errRapidReset and closes
	// its transport now rather than when the client next sends.
	_ = c.Conn.SetReadDeadline(time.Now())
}

func (c *guardedConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch c.goAway {
	case goAwaySent:
		return 0, errRapidReset
	case goAwayPending:
		k := c.out.toBoundary(p)
		n, err := c.Conn.Write(p[:k])
		if err != nil || !c.out.atBoundary() {
			return n, err
		}
		c.writeGoAway()
		if n < len(p) {
			return n, errRapidReset
		}
		return n, nil
	}
	n, err := c.Conn.Write(p)
	if !c.aside.Load() {
		c.out.scan(p[:n])
	}
	return n, err
}

// Close closes the socket, unless a flood was seen: then the flood's timer
// closes it, once the GOAWAY had time to reach the client.
func (c *guardedConn) Close() error {
	if c.flooded.Load() {
		return nil
	}
	return c.Conn.Close()
}

// frameScanner follows the HTTP/2 frames of a byte stream that arrives in
// pieces of any size, reading only the frame headers.
type frameScanner struct {
	skip   int // bytes before the next frame header: a preface, or the rest of a payload
	got    int // bytes of hdr filled
	hdr    [frameHeaderLen]byte
	framed bool // a frame header has been read
}

// next takes from b up to the end of the next frame header, or up to the
// end of what it must skip, and returns how many bytes it took and whether
// they completed a frame header (then in hdr).
func (s *frameScanner) next(b []byte) (int, bool) {
	if s.skip > 0 {
		n := min(s.skip, len(b))
		s.skip -= n
		return n, false
	}
	n := copy(s.hdr[s.got:], b)
	if s.got += n; s.got < frameHeaderLen {
		return n, false
	}
	s.got, s.framed = 0, true
	s.skip = int(s.hdr[0])<<16 | int(s.hdr[1])<<8 | int(s.hdr[2])
	return n, true
}

// scan follows the frames of b.
func (s *frameScanner) scan(b []byte) {
	for len(b) > 0 {
		n, _ := s.next(b)
		b = b[n:]
	}
}

// toBoundary follows the frames of b up to the first frame boundary, and
// returns how many bytes of b that is (all of them if there is none).
func (s *frameScanner) toBoundary(b []byte) int {
	k := 0
	for k < len(b) && !s.atBoundary() {
		n, _ := s.next(b[k:])
		k += n
	}
	return k
}

// atBoundary reports whether the stream is between two frames, a frame
// having been read.
func (s *frameScanner) atBoundary() bool { return s.framed && s.skip == 0 && s.got == 0 }

func (s *frameScanner) typ() http2.FrameType { return http2.FrameType(s.hdr[3]) }

func (s *frameScanner) streamID() uint32 {
	return (uint32(s.hdr[5])<<24 | uint32(s.hdr[6])<<16 | uint32(s.hdr[7])<<8 | uint32(s.hdr[8])) &^ (1 << 31)
}
