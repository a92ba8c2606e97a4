package edge

// RFC 9112 framing on the REST listener.
//
// net/http serves a request that carries both Content-Length and
// Transfer-Encoding: chunked (it drops Content-Length and reads chunks) and
// keeps the connection; it ignores Transfer-Encoding on HTTP/1.0 and keeps
// that connection too. RFC 9112 §6.1 and §6.3 want such a request refused
// and the connection closed: a proxy in front of the gateway may have framed
// it the other way, and what it took for a body would then be served here as
// a request (request smuggling). Go 1.26 has no server option or GODEBUG for
// it, and by the time a handler runs the Content-Length is gone from the
// request.
//
// So each connection of the REST listener (framedConn) reads the framing of
// the bytes net/http reads through it, counts the requests, and marks the
// first one to refuse; the edge's handler counts the requests net/http hands
// it and answers that one with 400 and Connection: close, on which net/http
// closes the connection after the answer. Both counts agree because net/http
// serves a connection's HTTP/1 requests one at a time, in order, and any
// request it does not hand to the handler (a head it cannot parse, an unknown
// Transfer-Encoding, two Content-Lengths that differ, a bad Expect) ends the
// connection. The one exception, net/http's own answer to OPTIONS *, is
// turned off and answered by the edge (HTTPServer).
//
// The parser (framing) reads as net/http does: the request line, header
// fields (bare LF line ends and obs-fold continuations included), a body of
// Content-Length bytes or chunks with extensions and trailers. It keeps a few
// integers per connection and skips bodies and header values without looking
// at each byte. Where it finds the framing broken, it stops reading and marks
// the request to refuse (the next one, if the break is in a body): net/http
// ends such a connection itself, and where it would not, refusing is the
// safe side of a disagreement. A connection that opens with the HTTP/2
// preface (h2c), or with a TLS handshake, is not read: over TLS, the
// requests are read above it (FramedListener).

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// A flaw is why a request's framing is refused.
type flaw uint8

const (
	flawNone flaw = iota
	// flawBothLengths: Content-Length and Transfer-Encoding (RFC 9112 §6.3).
	flawBothLengths
	// flawHTTP10Encoding: Transfer-Encoding on HTTP/1.0 (RFC 9112 §6.1).
	flawHTTP10Encoding
	// flawMalformed: a Content-Length, header line or chunk that does not
	// parse.
	flawMalformed
)

func (f flaw) message() string {
	switch f {
	case flawBothLengths:
		return "the request has both Content-Length and Transfer-Encoding, so its length is ambiguous (RFC 9112 section 6.3); the connection is closed"
	case flawHTTP10Encoding:
		return "an HTTP/1.0 request cannot carry Transfer-Encoding (RFC 9112 section 6.1); the connection is closed"
	default:
		return "the request's framing (Content-Length, header lines or chunked encoding) is malformed; the connection is closed"
	}
}

// The states of framing. Those of a head come before those of a body.
const (
	stLine        uint8 = iota // before a request line (CR and LF skipped, as after a POST)
	stRequestLine              // in the request line
	stLineStart                // at the start of a field line, or of the empty line
	stEmptyLineCR              // after a CR at the start of a line
	stName                     // in a field name
	stValue                    // in a field value
	stValueCR                  // after a CR in a Content-Length value
	stBody                     // in a Content-Length body
	stChunkSize                // in a chunk size
	stChunkExt                 // in a chunk extension
	stChunkSpace               // in whitespace after a chunk size
	stChunkLF                  // after the CR of a chunk line
	stChunkData                // in a chunk's data
	stDataCR                   // after a chunk's data: its CR
	stDataLF                   // its LF
	stDone                     // not reading: refused, HTTP/2, or broken
)

// The field being read.
const (
	fieldNone  uint8 = iota // none yet in this section
	fieldOther              // one that does not frame the request
	fieldCL                 // Content-Length
	fieldTE                 // Transfer-Encoding
)

// Names a field name read so far may still be.
const (
	maybeCL uint8 = 1 << iota
	maybeTE
)

// Where a Content-Length value is.
const (
	clNone   uint8 = iota // no digit yet
	clDigits              // in the digits
	clAfter               // in whitespace after them
)

const (
	contentLength    = "content-length"
	transferEncoding = "transfer-encoding"
	http10           = " HTTP/1.0"
	h2Preface        = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	tlsHandshake     = 0x16      // the first byte of a TLS connection; no HTTP/1 method starts with it
	maxContentLength = 1<<63 - 1 // net/http's: strconv.ParseUint(v, 10, 63)
)

// framing reads the framing of a connection's HTTP/1 requests as they
// arrive, in pieces of any size. Its zero value is at the start of a
// connection.
type framing struct {
	st       uint8
	requests int64 // requests begun; the one being read is the last
	refuse   int64 // the first request to refuse, or 0
	flaw     flaw  // why
	h2       bool  // the connection opened with the HTTP/2 preface
	preface  int8  // bytes of the preface matched; -1 once it cannot be one

	// The head being read (or the trailer section, when trailer is set).
	trailer bool
	version uint8 // bytes of http10 matched at the end of the request line; one more for a CR after them
	http10  bool
	field   uint8
	name    uint8 // bytes of the field's name read (at most 255)
	maybe   uint8
	clState uint8
	cl      uint64 // this Content-Length field's value
	hasCL   bool
	hasTE   bool
	length  uint64 // the request's Content-Length

	// The body.
	digits uint8  // hex digits of the chunk size read
	left   uint64 // bytes left of the body or the chunk
}

// feed reads p, the next bytes of the connection.
func (f *framing) feed(p []byte) {
	if len(p) == 0 {
		return
	}
	if f.preface == 0 && p[0] == tlsHandshake {
		// TLS: the requests are read above it (FramedListener), not here.
		f.preface, f.st = -1, stDone
		return
	}
	if f.preface >= 0 {
		// Until the preface is told apart, its bytes are held back (they
		// are the preface's own, so nothing is kept): read as HTTP/1 once
		// they are not it.
		at := int(f.preface)
		n := min(len(p), len(h2Preface)-at)
		switch {
		case string(p[:n]) != h2Preface[at:at+n]:
			f.preface = -1
			f.read([]byte(h2Preface[:at]))
		case at+n == len(h2Preface):
			f.preface, f.h2, f.st = -1, true, stDone
			return
		default:
			f.preface += int8(n)
			return
		}
	}
	f.read(p)
}

// read reads p as HTTP/1.
func (f *framing) read(p []byte) {
	for i := 0; i < len(p) && f.st != stDone; {
		switch {
		case f.st == stLine:
			if c := p[i]; c == '\r' || c == '\n' {
				i++
				continue
			}
			f.requests++
			f.startHead()
		case f.st == stBody:
			n := min(uint64(len(p)-i), f.left)
			i, f.left = i+int(n), f.left-n
			if f.left == 0 {
				f.st = stLine
			}
		case f.st == stChunkData:
			n := min(uint64(len(p)-i), f.left)
			i, f.left = i+int(n), f.left-n
			if f.left == 0 {
				f.st = stDataCR
			}
		case f.st == stRequestLine:
			i = f.requestLine(p, i)
		case f.st == stName:
			// To the colon (or a line end, which refuses) at once: only
			// whether the name is one of the two that frame a request
			// matters.
			j := i
			for j < len(p) && p[j] != ':' && p[j] != '\n' {
				j++
			}
			f.nameBytes(p[i:j])
			if i = j; i < len(p) {
				f.nameByte(p[i])
				i++
			}
		case f.st == stValue && f.field != fieldCL:
			// Values of other fields do not matter: to the end of the line.
			j := bytes.IndexByte(p[i:], '\n')
			if j < 0 {
				return
			}
			i += j + 1
			f.st = stLineStart
		default:
			f.step(p[i])
			i++
		}
	}
}

// requestLine reads the request line in p from i, and returns where it
// stopped. Only the version matters, and only whether it is HTTP/1.0, where
// net/http ignores Transfer-Encoding; net/http takes the version from the
// end of the line, and refuses a line with more than two spaces.
func (f *framing) requestLine(p []byte, i int) int {
	end, next := len(p), len(p)
	if j := bytes.IndexByte(p[i:], '\n'); j >= 0 {
		end, next = i+j, i+j+1
	}
	line := p[i:end]
	if len(line) > len(http10)+1 {
		// Only the tail can match; the match so far is past.
		f.version, line = 0, line[len(line)-len(http10)-1:]
	}
	for _, c := range line {
		switch {
		case int(f.version) < len(http10) && c == http10[f.version]:
			f.version++
		case int(f.version) == len(http10) && c == '\r':
			f.version++
		case c == ' ':
			f.version = 1
		default:
			f.version = 0
		}
	}
	if next > end {
		f.http10 = int(f.version) >= len(http10)
		f.st = stLineStart
	}
	return next
}

// step reads one byte of a field line, a chunk line or a trailer.
func (f *framing) step(c byte) {
	switch f.st {
	case stLineStart:
		if c == ' ' || c == '\t' {
			// obs-fold: net/http joins the line to the field before.
			if f.field == fieldNone {
				f.fail() // net/http refuses a leading continuation
				return
			}
			f.st = stValue
			f.value(c)
			return
		}
		if !f.endField() {
			return
		}
		switch c {
		case '\n':
			f.endSection()
		case '\r':
			f.st = stEmptyLineCR
		default:
			f.field, f.name, f.maybe = fieldOther, 0, maybeCL|maybeTE
			if f.trailer {
				f.maybe = 0 // trailer fields do not frame anything
			}
			f.st = stName
			f.nameByte(c)
		}
	case stEmptyLineCR:
		if c != '\n' {
			f.fail()
			return
		}
		f.endSection()
	case stName:
		f.nameByte(c)
	case stValue:
		f.value(c)
	case stValueCR:
		if c != '\n' {
			f.fail()
			return
		}
		f.st = stLineStart
	case stChunkSize:
		if d, ok := unhex(c); ok {
			if f.digits == 16 { // net/http's limit
				f.fail()
				return
			}
			f.left, f.digits = f.left<<4|uint64(d), f.digits+1
			return
		}
		switch {
		case f.digits == 0:
			f.fail()
		case c == ';':
			f.st = stChunkExt
		case c == ' ' || c == '\t':
			f.st = stChunkSpace
		case c == '\r':
			f.st = stChunkLF
		default:
			f.fail()
		}
	case stChunkExt:
		switch c {
		case '\r':
			f.st = stChunkLF
		case '\n':
			f.fail() // a chunk line ends in CRLF
		}
	case stChunkSpace:
		switch c {
		case ' ', '\t':
		case '\r':
			f.st = stChunkLF
		default:
			f.fail() // net/http allows whitespace only at the end of the line
		}
	case stChunkLF:
		if c != '\n' {
			f.fail()
			return
		}
		if f.left == 0 { // the last chunk; the trailer section follows
			f.trailer, f.field, f.st = true, fieldNone, stLineStart
			return
		}
		f.st = stChunkData
	case stDataCR:
		if c != '\r' {
			f.fail()
			return
		}
		f.st = stDataLF
	case stDataLF:
		if c != '\n' {
			f.fail()
			return
		}
		f.st, f.left, f.digits = stChunkSize, 0, 0
	}
}

// startHead begins the head of the next request.
func (f *framing) startHead() {
	f.st, f.trailer, f.version, f.http10, f.field = stRequestLine, false, 0, false, fieldNone
	f.hasCL, f.hasTE, f.length = false, false, 0
}

// nameByte reads a byte of a field name. net/http refuses names that are
// not tokens, so only the two names that frame a request are told apart.
func (f *framing) nameByte(c byte) {
	switch c {
	case ':':
		switch {
		case f.maybe&maybeCL != 0 && int(f.name) == len(contentLength):
			f.field, f.cl, f.clState = fieldCL, 0, clNone
		case f.maybe&maybeTE != 0 && int(f.name) == len(transferEncoding):
			f.field, f.hasTE = fieldTE, true
		}
		f.st = stValue
		return
	case '\n':
		f.fail() // a field line without a colon
		return
	}
	if 'A' <= c && c <= 'Z' {
		c += 'a' - 'A'
	}
	if int(f.name) >= len(contentLength) || contentLength[f.name] != c {
		f.maybe &^= maybeCL
	}
	if int(f.name) >= len(transferEncoding) || transferEncoding[f.name] != c {
		f.maybe &^= maybeTE
	}
	if f.name < 255 {
		f.name++
	}
}

// nameBytes reads bytes of a field name, none of them a colon or a line
// end: nameByte for each, a piece at a time.
func (f *framing) nameBytes(b []byte) {
	if len(b) == 0 {
		return
	}
	at := int(f.name)
	if f.maybe&maybeCL != 0 && !foldedPrefix(b, contentLength, at) {
		f.maybe &^= maybeCL
	}
	if f.maybe&maybeTE != 0 && !foldedPrefix(b, transferEncoding, at) {
		f.maybe &^= maybeTE
	}
	f.name = uint8(min(at+len(b), 255))
}

// foldedPrefix reports whether b, in lower case, is name[at:at+len(b)].
func foldedPrefix(b []byte, name string, at int) bool {
	if at+len(b) > len(name) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if name[at+i] != c {
			return false
		}
	}
	return true
}

// value reads a byte of a Content-Length value, or the line end of any
// value. net/http takes digits between optional whitespace, and whitespace
// for an obs-fold.
func (f *framing) value(c byte) {
	switch c {
	case '\n':
		f.st = stLineStart
		return
	case '\r':
		if f.field == fieldCL {
			f.st = stValueCR
		}
		return
	}
	if f.field != fieldCL {
		return
	}
	switch {
	case c == ' ' || c == '\t':
		if f.clState == clDigits {
			f.clState = clAfter
		}
	case '0' <= c && c <= '9' && f.clState != clAfter:
		d := uint64(c - '0')
		if f.cl > (maxContentLength-d)/10 {
			f.fail()
			return
		}
		f.cl, f.clState = f.cl*10+d, clDigits
	default:
		f.fail()
	}
}

// endField ends the field whose lines are behind, once no continuation
// follows; false if it is broken.
func (f *framing) endField() bool {
	if f.field != fieldCL {
		return true
	}
	f.field = fieldOther
	// net/http refuses an empty value, and Content-Length fields that differ.
	if f.clState == clNone || f.hasCL && f.cl != f.length {
		f.fail()
		return false
	}
	f.hasCL, f.length = true, f.cl
	return true
}

// endSection ends a head, or the trailer section of a chunked body.
func (f *framing) endSection() {
	switch {
	case f.trailer:
		f.st = stLine
	case f.hasTE && f.hasCL:
		f.refuseAt(f.requests, flawBothLengths)
	case f.hasTE && f.http10:
		f.refuseAt(f.requests, flawHTTP10Encoding)
	case f.hasTE: // net/http reads it as chunked, or refuses it and closes
		f.st, f.left, f.digits = stChunkSize, 0, 0
	case f.length > 0:
		f.st, f.left = stBody, f.length
	default:
		f.st = stLine
	}
}

// fail refuses the request whose head is broken, or the one after the
// request whose body is.
func (f *framing) fail() {
	n := f.requests
	if f.trailer || f.st >= stBody {
		n++
	}
	f.refuseAt(n, flawMalformed)
}

func (f *framing) refuseAt(n int64, why flaw) {
	f.refuse, f.flaw, f.st = n, why, stDone
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// FramedListener is l with the framing of its connections' HTTP/1
// requests read, for the server of HTTPServer to refuse what RFC 9112 calls
// ambiguous. HTTPListener has it for plain connections. A TLS listener on
// top of HTTPListener hides the requests from it, so it goes under a
// FramedListener of its own, which takes *tls.Conn with the handshake done:
// a connection that chose h2 by ALPN passes as it is, and one of HTTP/1.1
// keeps its TLS state (net/http sets Request.TLS from ConnectionState).
func (e *Edge) FramedListener(l net.Listener) net.Listener { return framedListener{l} }

type framedListener struct{ net.Listener }

func (l framedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*tls.Conn); ok {
		if st := tc.ConnectionState(); !st.HandshakeComplete || st.NegotiatedProtocol == "h2" {
			// HTTP/2, or no telling yet: net/http must see the *tls.Conn.
			return c, nil
		}
		return &framedTLSConn{framedConn: framedConn{Conn: c}, tls: tc}, nil
	}
	return &framedConn{Conn: c}, nil
}

// framedTLSConn is a framedConn over TLS, for HTTP/1.1.
type framedTLSConn struct {
	framedConn
	tls *tls.Conn
}

func (c *framedTLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

// CloseWrite lets net/http end a connection without a reset (closeWriteAndWait).
func (c *framedTLSConn) CloseWrite() error { return c.tls.CloseWrite() }

// framedConn reads the framing of what net/http reads from it, and tells
// the handler which request to refuse.
type framedConn struct {
	net.Conn
	framing framing // Read's alone: net/http never reads concurrently

	// What Read publishes for the handler, once framing stops: refuse is
	// stored after framing.flaw is final.
	refuse atomic.Int64
	h2     atomic.Bool
	// ended is set when a request is refused: Read reads no more, so that
	// net/http, which would read the rest of its body first, closes the
	// connection once the answer is out.
	ended atomic.Bool

	served int64 // HTTP/1 requests handed to the handler, which alone uses it
}

func (c *framedConn) Read(p []byte) (int, error) {
	if c.ended.Load() {
		return 0, io.EOF
	}
	n, err := c.Conn.Read(p)
	if n > 0 && c.framing.st != stDone {
		c.framing.feed(p[:n])
		if c.framing.st == stDone {
			c.h2.Store(c.framing.h2)
			c.refuse.Store(c.framing.refuse)
		}
	}
	return n, err
}

// next counts a request handed to the handler and says whether to refuse
// it. Requests of an HTTP/2 connection are neither counted nor refused:
// they run at once, and framing does not read them.
func (c *framedConn) next() flaw {
	if c.h2.Load() {
		return flawNone
	}
	c.served++
	if n := c.refuse.Load(); n != 0 && c.served >= n {
		c.ended.Store(true)
		return c.framing.flaw
	}
	return flawNone
}

type framedConnKey struct{}

// withFramedConn is the REST server's ConnContext: it gives a request its
// connection's framing check.
func withFramedConn(ctx context.Context, c net.Conn) context.Context {
	switch fc := c.(type) {
	case *framedConn:
		return context.WithValue(ctx, framedConnKey{}, fc)
	case *framedTLSConn:
		return context.WithValue(ctx, framedConnKey{}, &fc.framedConn)
	}
	return ctx
}

// checkFraming is h behind the framing check of the REST listener's
// connections: it answers the request marked for refusal with 400 and
// Connection: close, and answers OPTIONS * itself (net/http's own answer
// would bypass the count).
func (e *Edge) checkFraming(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(framedConnKey{}).(*framedConn); ok {
			if why := c.next(); why != flawNone {
				e.refuseFraming(w, why)
				return
			}
		}
		if r.Method == http.MethodOptions && r.RequestURI == "*" {
			optionsAsterisk(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// refuseFraming answers with the gateway's error body; Connection: close
// makes net/http close the connection after it, unread bytes and all.
func (e *Edge) refuseFraming(w http.ResponseWriter, why flaw) {
	e.Refused("http_framing")
	st := status.Convert(policy.Error(codes.InvalidArgument, policy.ReasonBadRequest, why.message(), nil))
	body, err := protojson.Marshal(st.Proto())
	if err != nil {
		body = []byte(`{"code":3,"message":"bad request framing"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set(policy.ErrorSourceKey, policy.SourceGateway)
	h.Set("Connection", "close")
	w.WriteHeader(policy.HTTPStatus(st.Code()))
	_, _ = w.Write(body)
}

// optionsAsterisk answers OPTIONS * as net/http's own handler does: 200,
// no body, and at most 4 KiB of the request's body read.
func optionsAsterisk(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "0")
	if r.ContentLength != 0 {
		_, _ = io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 4<<10))
	}
}
