package edge

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

const (
	get      = "GET /v1/products/1 HTTP/1.1\r\nHost: portico\r\nAccept: */*\r\n\r\n"
	postCL   = "POST /v1/products HTTP/1.1\r\nHost: portico\r\nContent-Length: 62\r\n\r\n" + smuggled
	smuggled = "GET /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked"
)

// framingCases are connections' bytes and what framing makes of them.
var framingCases = []struct {
	name     string
	in       string
	requests int64 // begun
	refuse   int64
	flaw     flaw
	h2       bool
}{
	{name: "one GET", in: get, requests: 1},
	{name: "pipelined, a body that looks like a head", in: get + postCL + get, requests: 3},
	{name: "HTTP/1.0 with a body", in: "POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc" + get, requests: 2},
	{name: "bare LF line ends", in: "POST / HTTP/1.1\nHost: a\nContent-Length: 2\n\nhiGET / HTTP/1.1\n\n", requests: 2},
	{name: "CRLF after a POST", in: "POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\n" + get, requests: 2},
	{name: "Content-Length with whitespace and obs-fold", in: "POST / HTTP/1.1\r\nContent-Length:\r\n \t3 \r\n\r\nabc" + get, requests: 2},
	{name: "the same Content-Length twice", in: "POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc" + get, requests: 2},
	{name: "names like the framing ones", in: "POST / HTTP/1.1\r\nContent-Lengths: 9\r\nX-Content-Length: 9\r\nTransfer-Encodin: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get, requests: 2},
	{name: "chunked, extensions and trailers", requests: 2, in: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5;name=val\r\nhello\r\n" + "A;q=\"a;b\"; r \r\n" + "0123456789\r\n" + "3 \t\r\n\r\n\r\r\n" +
		"0;end\r\nX-Trailer: t\r\nContent-Length: 9\r\n\tfolded\r\n\r\n" + get},
	{name: "chunked, data that looks like heads", requests: 2, in: "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n" +
		fmt.Sprintf("%x\r\n%s\r\n", len(get+smuggled), get+smuggled) + "0\r\n\r\n" + get},
	{name: "chunked, a trailer ending in a bare LF", in: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\n" + get, requests: 2},

	{name: "both lengths", in: get + "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get,
		requests: 2, refuse: 2, flaw: flawBothLengths},
	{name: "both lengths, other case and order", in: "POST / HTTP/1.1\r\ntransfer-ENCODING: chunked\r\nCONTENT-length: 5\r\n\r\n",
		requests: 1, refuse: 1, flaw: flawBothLengths},
	{name: "both lengths, obs-fold", in: "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\n",
		requests: 1, refuse: 1, flaw: flawBothLengths},
	{name: "both lengths, two encodings", in: "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
		requests: 1, refuse: 1, flaw: flawBothLengths},
	{name: "both lengths, bare LF", in: "POST / HTTP/1.1\nContent-Length: 0\nTransfer-Encoding: chunked\n\n",
		requests: 1, refuse: 1, flaw: flawBothLengths},
	{name: "Transfer-Encoding on HTTP/1.0", in: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
		requests: 1, refuse: 1, flaw: flawHTTP10Encoding},
	{name: "Transfer-Encoding on HTTP/1.0, bare LF", in: get + "POST / HTTP/1.0\nTransfer-Encoding: chunked\n\n",
		requests: 2, refuse: 2, flaw: flawHTTP10Encoding},

	{name: "Content-Lengths that differ", in: "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", requests: 1, refuse: 1, flaw: flawMalformed},
	{name: "Content-Length with a sign", in: "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n", requests: 1, refuse: 1, flaw: flawMalformed},
	{name: "Content-Length of two numbers", in: "POST / HTTP/1.1\r\nContent-Length: 3\r\n 4\r\n\r\n", requests: 1, refuse: 1, flaw: flawMalformed},
	{name: "Content-Length empty", in: "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", requests: 1, refuse: 1, flaw: flawMalformed},
	{name: "Content-Length over 63 bits", in: "POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n", requests: 1, refuse: 1, flaw: flawMalformed},
	{name: "a leading continuation", in: "GET / HTTP/1.1\r\n Transfer-Encoding: chunked\r\n\r\n", requests: 1, refuse: 1, flaw: flawMalformed},
	{name: "a field without a colon", in: "GET / HTTP/1.1\r\nTransfer-Encoding\r\n\r\n", requests: 1, refuse: 1, flaw: flawMalformed},
	{name: "a chunk size that is not hex", in: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", requests: 1, refuse: 2, flaw: flawMalformed},
	{name: "a chunk line ending in LF", in: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", requests: 1, refuse: 2, flaw: flawMalformed},
	{name: "chunk data without its CRLF", in: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloGET", requests: 1, refuse: 2, flaw: flawMalformed},
	{name: "a chunk size of 17 digits", in: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000001\r\n", requests: 1, refuse: 2, flaw: flawMalformed},
	{name: "whitespace before a chunk extension", in: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\n", requests: 1, refuse: 2, flaw: flawMalformed},

	{name: "h2c preface", in: h2Preface + "\x00\x00\x12\x04\x00\x00\x00\x00\x00 Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", h2: true},
	{name: "PRI on HTTP/1", in: "PRI * HTTP/2.0\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", requests: 1, refuse: 1, flaw: flawBothLengths},
}

func TestFraming(t *testing.T) {
	for _, tc := range framingCases {
		t.Run(tc.name, func(t *testing.T) {
			var whole framing
			whole.feed([]byte(tc.in))
			if whole.requests != tc.requests || whole.refuse != tc.refuse || whole.flaw != tc.flaw || whole.h2 != tc.h2 {
				t.Fatalf("requests %d, refuse %d (%d), h2 %v; want %d, %d (%d), %v",
					whole.requests, whole.refuse, whole.flaw, whole.h2, tc.requests, tc.refuse, tc.flaw, tc.h2)
			}
			if tc.refuse == 0 && !tc.h2 && whole.st != stLine {
				t.Errorf("ends in state %d, want between requests", whole.st)
			}
			// Split at every byte, and a byte at a time: the same.
			for i := range len(tc.in) + 1 {
				var split framing
				split.feed([]byte(tc.in[:i]))
				split.feed([]byte(tc.in[i:]))
				if split != whole {
					t.Fatalf("split at %d: %+v, whole: %+v", i, split, whole)
				}
			}
			var bytewise framing
			for i := range len(tc.in) {
				bytewise.feed([]byte{tc.in[i]})
			}
			if bytewise != whole {
				t.Fatalf("a byte at a time: %+v, whole: %+v", bytewise, whole)
			}
		})
	}
}

// TestFramingLongLines: a request line and values longer than any read.
func TestFramingLongLines(t *testing.T) {
	in := "GET /" + strings.Repeat("a", 10000) + " HTTP/1.0\r\nX: " + strings.Repeat("b", 10000) + "\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, size := range []int{1, 7, 9, 10, 11, 4096} {
		var f framing
		for p := []byte(in); len(p) > 0; {
			n := min(size, len(p))
			f.feed(p[:n])
			p = p[n:]
		}
		if f.refuse != 1 || f.flaw != flawHTTP10Encoding {
			t.Errorf("reads of %d: refuse %d (%d), want 1 (HTTP/1.0 with Transfer-Encoding)", size, f.refuse, f.flaw)
		}
	}
}

// TestFramingLeavesTLSAlone: under a TLS listener, framing sees records,
// not requests, and stops at once.
func TestFramingLeavesTLSAlone(t *testing.T) {
	var f framing
	f.feed([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n:\r\n\r\n"))
	if f.st != stDone || f.requests != 0 || f.refuse != 0 {
		t.Errorf("state %d, requests %d, refuse %d; want stopped, nothing counted", f.st, f.requests, f.refuse)
	}
}

// FuzzFraming checks framing against net/http's own reading: where
// net/http reads a request and its body without error, framing has read the
// same bytes as that request, or refuses it.
func FuzzFraming(f *testing.F) {
	for _, tc := range framingCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		src := &countingReader{r: bytes.NewReader(in)}
		br := bufio.NewReader(src)
		var fr framing
		off := 0
		for i := int64(1); ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil || req.ProtoMajor != 1 && req.Method != "PRI" {
				return // net/http's server refuses it and closes the connection
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return // net/http closes the connection
			}
			end := src.n - br.Buffered()
			fr.feed(in[off:end])
			off = end
			switch {
			case fr.h2:
				return
			case fr.preface > 0:
				continue // held back until the HTTP/2 preface is told apart
			case fr.refuse != 0 && fr.refuse <= i && fr.flaw != flawMalformed:
				return // refused by design: the connection ends here
			case fr.refuse != 0 || fr.requests != i || fr.st != stLine:
				t.Fatalf("net/http read request %d (%s %s, %d bytes) in %q; framing: requests %d, state %d, refuse %d",
					i, req.Method, req.RequestURI, end, in[:end], fr.requests, fr.st, fr.refuse)
			}
		}
	})
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func BenchmarkFraming(b *testing.B) {
	head := []byte("POST /v1/products HTTP/1.1\r\nHost: portico.example\r\nUser-Agent: bench/1.0\r\nAccept: application/json\r\n" +
		"X-Api-Key: pk_test_3b1f0c8e5a7d4e2f9c6b1a0d8e7f6c5b\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n")
	body := make([]byte, 1024)
	b.SetBytes(int64(len(head) + len(body)))
	b.ReportAllocs()
	var f framing
	for b.Loop() {
		f.feed(head)
		f.feed(body)
	}
	if f.refuse != 0 || f.st != stLine {
		b.Fatalf("refuse %d, state %d", f.refuse, f.st)
	}
}

// serveEdge serves h behind the edge's REST listener and server, and
// returns the address and the refusal counter.
func serveEdge(t *testing.T, h http.Handler) (string, prometheus.Counter) {
	t.Helper()
	e, err := New(Config{}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := e.HTTPServer(h)
	go func() { _ = srv.Serve(e.HTTPListener(l)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String(), e.refused.WithLabelValues("http_framing")
}

// exchange writes in on a new connection and reads the responses until the
// server closes it; closed is false if it stayed open for half a second.
func exchange(t *testing.T, addr, in string) (resps []*http.Response, bodies []string, closed bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, in); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	br := bufio.NewReader(conn)
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			return resps, bodies, !errors.As(err, &ne) || !ne.Timeout()
		}
		body, _ := io.ReadAll(resp.Body)
		resps, bodies = append(resps, resp), append(bodies, string(body))
	}
}

func count(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

func TestHTTPServerRefusesAmbiguousFraming(t *testing.T) {
	var mu sync.Mutex
	var served []string
	addr, refused := serveEdge(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		served = append(served, r.Method+" "+r.URL.Path+" "+string(body))
	}))
	for _, tc := range []struct {
		name   string
		in     string
		codes  []int
		served int
		closed bool
	}{
		{"keep-alive", get + get, []int{200, 200}, 2, false},
		{"a chunked POST", "POST /c HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n" + get, []int{200, 200}, 2, false},
		{"OPTIONS * counts", "OPTIONS * HTTP/1.1\r\nHost: p\r\n\r\n" + get, []int{200, 200}, 1, false},
		{"CL.TE, smuggling a GET", get + "POST /s HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get,
			[]int{200, 400}, 1, true},
		{"TE.CL", "POST /s HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
			[]int{400}, 0, true},
		{"HTTP/1.0 with Transfer-Encoding", "POST /s HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", []int{400}, 0, true},
		{"HTTP/1.0 with Transfer-Encoding only", "POST /s HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" + get, []int{400}, 0, true},
		// net/http's own refusals, kept: they close the connection too.
		{"Content-Lengths that differ", "POST /s HTTP/1.1\r\nHost: p\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", []int{400}, 0, true},
		{"an encoding other than chunked", "POST /s HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: gzip\r\n\r\n" + get, []int{501}, 0, true},
		{"CL and an encoding other than chunked", "POST /s HTTP/1.1\r\nHost: p\r\nContent-Length: 1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + get, []int{501}, 0, true},
		{"broken chunks", "POST /s HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n" + get, []int{200}, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			served = nil
			mu.Unlock()
			before := count(refused)
			resps, bodies, closed := exchange(t, addr, tc.in)
			mu.Lock()
			defer mu.Unlock()
			var codes []int
			for _, r := range resps {
				codes = append(codes, r.StatusCode)
			}
			t.Logf("%v, served %q, closed %v", codes, served, closed)
			if fmt.Sprint(codes) != fmt.Sprint(tc.codes) || len(served) != tc.served || closed != tc.closed {
				t.Fatalf("answers %v, %d served, closed %v; want %v, %d, %v", codes, len(served), closed, tc.codes, tc.served, tc.closed)
			}
			last := len(resps) - 1
			if tc.codes[last] != 400 || !strings.HasPrefix(resps[last].Header.Get("Content-Type"), "application/json") {
				return // net/http's
			}
			var st struct {
				Code    int
				Message string
				Details []map[string]any
			}
			if err := json.Unmarshal([]byte(bodies[last]), &st); err != nil {
				t.Fatalf("%v: %s", err, bodies[last])
			}
			r := resps[last]
			if st.Code != 3 || len(st.Details) != 1 || st.Details[0]["reason"] != "BAD_REQUEST" || st.Details[0]["domain"] != "gateway.portico.dev" ||
				r.Header.Get("X-Portico-Error-Source") != "gateway" || !r.Close {
				t.Errorf("answer %v %s", r.Header, bodies[last])
			}
			if got := count(refused) - before; got != 1 {
				t.Errorf("counted %v refusals, want 1", got)
			}
		})
	}
}

// handshakeListener hands out *tls.Conn with the handshake done, as the
// gateway's TLS listener does.
type handshakeListener struct {
	net.Listener
	cfg *tls.Config
}

func (l handshakeListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := tls.Server(c, l.cfg)
		if err := tc.Handshake(); err != nil {
			c.Close()
			continue
		}
		return tc, nil
	}
}

// TestHTTPServerRefusesAmbiguousFramingOverTLS: a FramedListener above TLS
// checks HTTP/1.1 and keeps Request.TLS; h2 by ALPN passes untouched.
func TestHTTPServerRefusesAmbiguousFramingOverTLS(t *testing.T) {
	certs := httptest.NewUnstartedServer(nil)
	certs.StartTLS()
	cert := certs.TLS.Certificates
	certs.Close()

	e, err := New(Config{}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	srv := e.HTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, fmt.Sprintf("%s tls=%v", r.Proto, r.TLS != nil))
	}))
	tl := e.FramedListener(handshakeListener{e.HTTPListener(l), &tls.Config{Certificates: cert, NextProtos: []string{"h2", "http/1.1"}}})
	go func() { _ = srv.Serve(tl) }()
	t.Cleanup(func() { _ = srv.Close() })

	conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, get+"POST /s HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+get)
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	br := bufio.NewReader(conn)
	var codes []int
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("after %v: %v, want the connection closed", codes, err)
			}
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		codes = append(codes, resp.StatusCode)
	}

	h2 := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for range 2 {
		resp, err := h2.Get("https://" + l.Addr().String() + "/h2")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("answers %v, served %v", codes, seen)
	if fmt.Sprint(codes) != "[200 400 200 200]" || fmt.Sprint(seen) != "[HTTP/1.1 tls=true HTTP/2.0 tls=true HTTP/2.0 tls=true]" {
		t.Errorf("answers %v, served %v; want [200 400 200 200], one HTTP/1.1 and two HTTP/2.0 with TLS", codes, seen)
	}
}
