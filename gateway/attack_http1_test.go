package gateway_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway/policy"
)

// rawConn is one client connection to the REST listener, written by hand.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// send writes a request; the API key goes where the text says %s.
func (c *rawConn) send(format string) {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.conn, format, testAPIKey); err != nil {
		c.t.Fatal(err)
	}
}

// response reads the next response and its body.
func (c *rawConn) response() (*http.Response, []byte) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp, body
}

// closedWithin reads until the gateway closes the connection, and says
// whether it did within d, and what it sent meanwhile.
func (c *rawConn) closedWithin(d time.Duration) (bool, int64) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	n, err := io.Copy(io.Discard, c.br)
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout(), n
}

// TestAttackHTTP1Framing: a request with both Content-Length and
// Transfer-Encoding (request smuggling's ambiguity) gets 400 and its
// connection closed, so what a proxy in front took for a body is never
// served here as a request; ordinary keep-alive and chunked requests work.
func TestAttackHTTP1Framing(t *testing.T) {
	w := newWorld(t, false)
	w.startCatalog()
	addr := w.gw.HTTPAddr()
	before, _ := scrape(t, w)

	// Warm the route: the first call may wait for the backend.
	if r := w.rest("GET", "/v1/products/prd-000001", nil); r.Status != http.StatusOK {
		t.Fatalf("GET: %d %s", r.Status, r.Raw)
	}

	for _, tc := range []struct{ name, request string }{
		{"CL.TE, a GET smuggled in the chunked body", "POST /v1/products HTTP/1.1\r\nHost: portico\r\nX-Api-Key: %[1]s\r\n" +
			"Content-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
			"GET /v1/products/prd-000001 HTTP/1.1\r\nHost: portico\r\nX-Api-Key: %[1]s\r\n\r\n"},
		{"a GET with both", "GET /v1/products/prd-000001 HTTP/1.1\r\nHost: portico\r\nX-Api-Key: %[1]s\r\n" +
			"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"},
		{"TE.CL, obs-fold and odd case", "POST /v1/products HTTP/1.1\r\nHost: portico\r\nX-Api-Key: %[1]s\r\n" +
			"content-LENGTH: 4\r\ntransfer-encoding:\r\n chunked\r\n\r\n5c\r\nGET /v1/products/prd-000001 HTTP/1.1\r\n\r\n0\r\n\r\n"},
	} {
		c := dialRaw(t, addr)
		start := time.Now()
		c.send(tc.request)
		resp, body := c.response()
		closed, extra := c.closedWithin(5 * time.Second)
		took := time.Since(start)
		t.Logf("%s: %d in %v, connection closed %v (%d bytes after the answer); %s",
			tc.name, resp.StatusCode, took.Round(time.Millisecond), closed, extra, body)
		var st map[string]any
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("%s: %v: %s", tc.name, err, body)
		}
		reason, domain := errorInfo(st)
		if resp.StatusCode != http.StatusBadRequest || st["code"] != 3.0 || reason != policy.ReasonBadRequest || domain != policy.ErrorDomain ||
			resp.Header.Get("X-Portico-Error-Source") != policy.SourceGateway || !resp.Close {
			t.Errorf("%s: %d %v %s, want 400 INVALID_ARGUMENT/BAD_REQUEST from the gateway with Connection: close", tc.name, resp.StatusCode, resp.Header, body)
		}
		if !closed || extra != 0 {
			t.Errorf("%s: connection closed %v, %d bytes after the 400 (a smuggled request answered?)", tc.name, closed, extra)
		}
	}

	// Two requests on one connection, kept alive.
	c := dialRaw(t, addr)
	for i := range 2 {
		c.send("GET /v1/products/prd-000001 HTTP/1.1\r\nHost: portico\r\nX-Api-Key: %s\r\n\r\n")
		if resp, body := c.response(); resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("keep-alive request %d: %d close=%v %s", i+1, resp.StatusCode, resp.Close, body)
		}
	}
	if closed, _ := c.closedWithin(300 * time.Millisecond); closed {
		t.Error("a keep-alive connection was closed after two good requests")
	}
	t.Log("keep-alive: two GETs on one connection, both 200, connection kept")

	// A chunked POST without Content-Length, then a GET on the same connection.
	product := `{"sku": "CHUNKED-1", "name": "Chunked kettle", "price": 100, "currency": "EUR", "stock": 1}`
	half := len(product) / 2
	c.send("POST /v1/products HTTP/1.1\r\nHost: portico\r\nX-Api-Key: %s\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fmt.Sprintf("%x;part=1\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", half, product[:half], len(product)-half, product[half:]))
	resp, body := c.response()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "CHUNKED-1") {
		t.Fatalf("chunked POST: %d %s", resp.StatusCode, body)
	}
	c.send("GET /v1/products/prd-000001 HTTP/1.1\r\nHost: portico\r\nX-Api-Key: %s\r\n\r\n")
	if resp, body := c.response(); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET after the chunked POST: %d %s", resp.StatusCode, body)
	}
	t.Log("chunked POST without Content-Length: 200, and the connection serves the next request")

	after, _ := scrape(t, w)
	const key = `portico_refused_total{reason="http_framing"}`
	t.Logf("%s: %v", key, after[key]-before[key])
	if got := after[key] - before[key]; got != 3 {
		t.Errorf("%s grew by %v, want 3", key, got)
	}
}
