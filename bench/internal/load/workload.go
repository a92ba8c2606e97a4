package load

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/portico-gw/portico/bench/internal/fixture"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// APIKey is the key every request carries; Portico knows it, the peers
// ignore it.
const APIKey = "pk_bench_5c2e9a7f1d3b4e6a8c0f2d4b6a8e0c1f"

// Workload is one kind of request, over both transports.
type Workload struct {
	Name string
	// gRPC
	method  string
	request proto.Message
	reply   func() proto.Message
	stream  bool
	// REST
	httpMethod, path string
	body             []byte
}

// Workloads returns the benchmark's four requests.
func Workloads() []Workload {
	return []Workload{
		{Name: "get", method: catalogv1.CatalogService_GetProduct_FullMethodName,
			request:    &catalogv1.GetProductRequest{Id: fixture.ProductID},
			reply:      func() proto.Message { return new(catalogv1.GetProductResponse) },
			httpMethod: http.MethodGet, path: "/v1/products/" + fixture.ProductID},
		{Name: "list", method: catalogv1.CatalogService_ListProducts_FullMethodName,
			request:    &catalogv1.ListProductsRequest{PageSize: fixture.PageSize},
			reply:      func() proto.Message { return new(catalogv1.ListProductsResponse) },
			httpMethod: http.MethodGet, path: "/v1/products?page_size=" + strconv.Itoa(fixture.PageSize)},
		{Name: "create", method: catalogv1.CatalogService_CreateProduct_FullMethodName,
			request:    &catalogv1.CreateProductRequest{Product: fixture.NewProduct()},
			reply:      func() proto.Message { return new(catalogv1.CreateProductResponse) },
			httpMethod: http.MethodPost, path: "/v1/products", body: mustJSON(fixture.NewProduct())},
		{Name: "stream", method: ordersv1.OrderService_WatchOrder_FullMethodName, stream: true,
			request:    &ordersv1.WatchOrderRequest{Id: fixture.OrderID},
			reply:      func() proto.Message { return new(ordersv1.WatchOrderResponse) },
			httpMethod: http.MethodGet, path: "/v1/orders/" + fixture.OrderID + ":watch"},
	}
}

// BodyBytes is the size of the REST request body.
func (w Workload) BodyBytes() int { return len(w.body) }

func mustJSON(m proto.Message) []byte {
	b, err := protojson.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// Option changes how a client connects.
type Option func(*options)

type options struct {
	tls   *tls.Config
	http2 bool
}

// WithTLS dials over TLS with c (its RootCAs trust the server); without
// it, clients speak plaintext.
func WithTLS(c *tls.Config) Option { return func(o *options) { o.tls = c } }

// WithHTTP2 makes a REST client speak h2, chosen by ALPN, so it needs
// WithTLS; without it, a REST client speaks HTTP/1.1.
func WithHTTP2() Option { return func(o *options) { o.http2 = true } }

func apply(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// GRPCClient is a set of connections to one gRPC address.
type GRPCClient struct{ conns []*grpc.ClientConn }

// DialGRPC opens n connections to addr.
func DialGRPC(addr string, n int, opts ...Option) (*GRPCClient, error) {
	creds := insecure.NewCredentials()
	if o := apply(opts); o.tls != nil {
		creds = credentials.NewTLS(o.tls)
	}
	c := &GRPCClient{}
	for range n {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			c.Close()
			return nil, err
		}
		cc.Connect()
		c.conns = append(c.conns, cc)
	}
	return c, nil
}

// Close closes every connection.
func (c *GRPCClient) Close() {
	for _, cc := range c.conns {
		cc.Close()
	}
}

var streamDesc = &grpc.StreamDesc{ServerStreams: true}

// Call makes w's request; worker i uses connection i mod n.
func (c *GRPCClient) Call(w Workload) Call {
	return func(ctx context.Context, worker int) error {
		cc := c.conns[worker%len(c.conns)]
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-api-key", APIKey), 10*time.Second)
		defer cancel()
		if !w.stream {
			return cc.Invoke(ctx, w.method, w.request, w.reply())
		}
		s, err := cc.NewStream(ctx, streamDesc, w.method)
		if err != nil {
			return err
		}
		if err := s.SendMsg(w.request); err != nil {
			return err
		}
		if err := s.CloseSend(); err != nil {
			return err
		}
		for n := 0; ; n++ {
			if err := s.RecvMsg(w.reply()); err != nil {
				if errors.Is(err, io.EOF) {
					return wantMessages(n)
				}
				return err
			}
		}
	}
}

func wantMessages(n int) error {
	if n != fixture.StreamLength {
		return fmt.Errorf("stream carried %d messages, want %d", n, fixture.StreamLength)
	}
	return nil
}

// RESTClient sends HTTP/1.1 requests over keep-alive connections, or h2
// requests over one connection.
type RESTClient struct {
	base   string
	client *http.Client
	proto  int // the HTTP major version every response must come in
}

// NewREST is a client for base (http://host:port, or https:// with
// WithTLS) keeping up to conns idle HTTP/1.1 connections.
func NewREST(base string, conns int, opts ...Option) *RESTClient {
	o := apply(opts)
	t := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, DisableCompression: true, IdleConnTimeout: time.Minute,
		Protocols: new(http.Protocols)}
	if o.tls != nil {
		// A clone: the transport writes its ALPN protocols into the config.
		t.TLSClientConfig = o.tls.Clone()
	}
	c := &RESTClient{base: base, client: &http.Client{Transport: t, Timeout: 10 * time.Second}, proto: 1}
	if o.http2 {
		t.Protocols.SetHTTP2(true)
		c.proto = 2
	} else {
		t.Protocols.SetHTTP1(true)
	}
	return c
}

// Close drops the idle connections.
func (c *RESTClient) Close() { c.client.CloseIdleConnections() }

// Call makes w's request and reads the whole response.
func (c *RESTClient) Call(w Workload) Call {
	url := c.base + w.path
	return func(ctx context.Context, _ int) error {
		var body io.Reader
		if w.body != nil {
			body = bytes.NewReader(w.body)
		}
		req, err := http.NewRequestWithContext(ctx, w.httpMethod, url, body)
		if err != nil {
			return err
		}
		req.Header.Set("X-Api-Key", APIKey)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s %s: %s: %.200s", w.httpMethod, w.path, resp.Status, raw)
		}
		if resp.ProtoMajor != c.proto {
			return fmt.Errorf("%s %s: answered over %s, want HTTP/%d", w.httpMethod, w.path, resp.Proto, c.proto)
		}
		if w.stream {
			return wantMessages(bytes.Count(raw, []byte("\n")))
		}
		return nil
	}
}
