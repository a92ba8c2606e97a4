package gateway_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/portico-gw/portico/gateway"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"github.com/portico-gw/portico/services/orders"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// The browser protocols on the REST port, as connect-go speaks them.
var webProtocols = map[string][]connect.ClientOption{
	"connect":      nil, // binary
	"connect-json": {connect.WithProtoJSON()},
	"grpc-web":     {connect.WithGRPCWeb()},
}

func webClient[Req, Res any](w *world, method string, opts []connect.ClientOption) *connect.Client[Req, Res] {
	return connect.NewClient[Req, Res](httpClient, w.base+method, opts...)
}

func webRequest[T any](msg *T, headers map[string]string) *connect.Request[T] {
	r := connect.NewRequest(msg)
	for k, v := range headers {
		r.Header().Set(k, v)
	}
	return r
}

// callWeb is callGRPC over gRPC-Web or Connect on the REST port.
func callWeb(t *testing.T, w *world, protocol string, req request) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := webProtocols[protocol]
	var err error
	switch req.method {
	case "GetProduct":
		_, err = webClient[catalogv1.GetProductRequest, catalogv1.GetProductResponse](w, "/catalog.v1.CatalogService/GetProduct", opts).
			CallUnary(ctx, webRequest(&catalogv1.GetProductRequest{Id: "prd-000001"}, req.headers))
	case "ListProducts":
		_, err = webClient[catalogv1.ListProductsRequest, catalogv1.ListProductsResponse](w, "/catalog.v1.CatalogService/ListProducts", opts).
			CallUnary(ctx, webRequest(&catalogv1.ListProductsRequest{}, req.headers))
	case "CreateProduct":
		in := proto.Clone(req.body).(*catalogv1.CreateProductRequest)
		if in.GetProduct().GetSku() != "" {
			in.Product.Sku += "-" + strings.ToUpper(strings.ReplaceAll(protocol, "-", ""))
		}
		_, err = webClient[catalogv1.CreateProductRequest, catalogv1.CreateProductResponse](w, "/catalog.v1.CatalogService/CreateProduct", opts).
			CallUnary(ctx, webRequest(in, req.headers))
	case "CreateOrder":
		_, err = webClient[ordersv1.CreateOrderRequest, ordersv1.CreateOrderResponse](w, "/orders.v1.OrderService/CreateOrder", opts).
			CallUnary(ctx, webRequest(req.body.(*ordersv1.CreateOrderRequest), req.headers))
	case "ListOrders":
		_, err = webClient[ordersv1.ListOrdersRequest, ordersv1.ListOrdersResponse](w, "/orders.v1.OrderService/ListOrders", opts).
			CallUnary(ctx, webRequest(&ordersv1.ListOrdersRequest{}, req.headers))
	default:
		t.Fatalf("callWeb: no method %s", req.method)
	}
	return connectOutcome(err)
}

// connectOutcome reduces a connect-go error to what every transport shares.
func connectOutcome(err error) outcome {
	if err == nil {
		return outcome{code: codes.OK}
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return outcome{code: codes.Unknown, message: err.Error()}
	}
	out := outcome{code: codes.Code(ce.Code()), message: ce.Message(), header: ce.Meta().Get("Www-Authenticate")}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		switch v := v.(type) {
		case *errdetails.ErrorInfo:
			out.reason = v.GetReason()
		case *errdetails.BadRequest:
			for _, f := range v.GetFieldViolations() {
				out.fields = append(out.fields, f.GetField())
			}
		}
	}
	return out
}

// TestGRPCWebAndConnect calls GetProduct and WatchOrder over gRPC-Web
// (binary, and text framed by hand) and Connect (binary and JSON) on the
// REST port, through the same chain as native gRPC: the stats count them,
// and a refusal carries the same code and reason.
func TestGRPCWebAndConnect(t *testing.T) {
	w := newWorld(t, false)
	w.startCatalog()
	w.startOrders(orders.WithStatusStep(20 * time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	created, err := ordersv1.NewOrderServiceClient(w.conn).CreateOrder(ctx, &ordersv1.CreateOrderRequest{
		Items: []*ordersv1.LineItem{{ProductId: "prd-000001", Quantity: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	// By default a browser's call carries the rate limit's numbers and a
	// native gRPC call does not (rate_limit.headers): the same method, the
	// same chain, told apart by the web door.
	var native metadata.MD
	if _, err := w.catalogClient().GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000002"}, grpc.Header(&native)); err != nil {
		t.Fatal(err)
	}
	if got := native.Get("ratelimit-limit"); len(got) != 0 || len(native.Get("x-instance-id")) != 1 {
		t.Errorf("native gRPC GetProduct: headers %v, want x-instance-id and no ratelimit-*", native)
	}
	key := map[string]string{"X-Api-Key": testAPIKey}
	for protocol, opts := range webProtocols {
		t.Run(protocol, func(t *testing.T) {
			got, err := webClient[catalogv1.GetProductRequest, catalogv1.GetProductResponse](w, "/catalog.v1.CatalogService/GetProduct", opts).
				CallUnary(ctx, webRequest(&catalogv1.GetProductRequest{Id: "prd-000002"}, nil))
			if err != nil || got.Msg.GetProduct().GetId() != "prd-000002" || got.Header().Get("X-Instance-Id") == "" {
				t.Fatalf("GetProduct: %v %v", got, err)
			}
			if got.Header().Get("Ratelimit-Limit") == "" {
				t.Errorf("GetProduct: no RateLimit headers: %v", got.Header())
			}
			stream, err := webClient[ordersv1.WatchOrderRequest, ordersv1.WatchOrderResponse](w, "/orders.v1.OrderService/WatchOrder", opts).
				CallServerStream(ctx, webRequest(&ordersv1.WatchOrderRequest{Id: created.GetOrder().GetId()}, key))
			if err != nil {
				t.Fatal(err)
			}
			var statuses []string
			for stream.Receive() {
				statuses = append(statuses, stream.Msg().GetOrder().GetStatus().String())
			}
			if err := stream.Err(); err != nil || len(statuses) == 0 || statuses[len(statuses)-1] != "ORDER_STATUS_SHIPPED" {
				t.Errorf("WatchOrder: %v, %v", statuses, err)
			}
			// A browser's stream carries the numbers as its unary calls do.
			if stream.ResponseHeader().Get("Ratelimit-Limit") == "" {
				t.Errorf("WatchOrder: no RateLimit headers: %v", stream.ResponseHeader())
			}
			// A stream refused by the chain: the native code and reason.
			stream, err = webClient[ordersv1.WatchOrderRequest, ordersv1.WatchOrderResponse](w, "/orders.v1.OrderService/WatchOrder", opts).
				CallServerStream(ctx, webRequest(&ordersv1.WatchOrderRequest{Id: created.GetOrder().GetId()}, nil))
			if err == nil {
				for stream.Receive() {
				}
				err = stream.Err()
			}
			if out := connectOutcome(err); out.code != codes.Unauthenticated || out.reason != "MISSING_CREDENTIALS" {
				t.Errorf("anonymous WatchOrder: %+v", out)
			}
			// And one the validation refuses.
			stream, err = webClient[ordersv1.WatchOrderRequest, ordersv1.WatchOrderResponse](w, "/orders.v1.OrderService/WatchOrder", opts).
				CallServerStream(ctx, webRequest(&ordersv1.WatchOrderRequest{}, key))
			if err == nil {
				for stream.Receive() {
				}
				err = stream.Err()
			}
			if out := connectOutcome(err); out.code != codes.InvalidArgument || out.reason != "INVALID_REQUEST" {
				t.Errorf("WatchOrder without an id: %+v", out)
			}
			t.Logf("%s: GetProduct from %s, WatchOrder %v", protocol, got.Header().Get("X-Instance-Id"), statuses)
		})
	}

	t.Run("connect-get", func(t *testing.T) {
		// Connect's unary GET, for methods without side effects.
		var method string
		client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			method = r.Method
			return http.DefaultTransport.RoundTrip(r)
		})}
		got, err := connect.NewClient[catalogv1.GetProductRequest, catalogv1.GetProductResponse](client,
			w.base+"/catalog.v1.CatalogService/GetProduct", connect.WithHTTPGet(), connect.WithIdempotency(connect.IdempotencyNoSideEffects)).
			CallUnary(ctx, connect.NewRequest(&catalogv1.GetProductRequest{Id: "prd-000004"}))
		if err != nil || got.Msg.GetProduct().GetId() != "prd-000004" || method != http.MethodGet {
			t.Errorf("GetProduct by GET: %v %v, sent as %s", got, err, method)
		}
	})

	t.Run("grpc-web-text", func(t *testing.T) {
		msg, _ := proto.Marshal(&catalogv1.GetProductRequest{Id: "prd-000003"})
		frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
		req, _ := http.NewRequestWithContext(ctx, "POST", w.base+"/catalog.v1.CatalogService/GetProduct",
			strings.NewReader(base64.StdEncoding.EncodeToString(append(frame, msg...))))
		req.Header.Set("Content-Type", "application/grpc-web-text")
		req.Header.Set("X-Grpc-Web", "1")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		text, _ := io.ReadAll(resp.Body)
		var body []byte
		// The answer is base64 in chunks, each padded: a message frame,
		// then the trailers frame.
		for rest := string(text); rest != ""; {
			n := strings.Index(rest, "=")
			chunk := rest
			if n >= 0 {
				for n < len(rest) && rest[n] == '=' {
					n++
				}
				chunk, rest = rest[:n], rest[n:]
			} else {
				rest = ""
			}
			b, err := base64.StdEncoding.DecodeString(chunk)
			if err != nil {
				t.Fatalf("grpc-web-text answer %q: %v", text, err)
			}
			body = append(body, b...)
		}
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc-web-text") || len(body) < 5 || body[0] != 0 {
			t.Fatalf("grpc-web-text: %d %v %q", resp.StatusCode, resp.Header, body)
		}
		n := binary.BigEndian.Uint32(body[1:5])
		var got catalogv1.GetProductResponse
		if err := proto.Unmarshal(body[5:5+n], &got); err != nil || got.GetProduct().GetId() != "prd-000003" {
			t.Errorf("grpc-web-text GetProduct: %v %v", &got, err)
		}
		if trailers := body[5+n:]; len(trailers) < 5 || trailers[0] != 0x80 || !bytes.Contains(bytes.ToLower(trailers), []byte("grpc-status: 0")) {
			t.Errorf("grpc-web-text trailers %q", trailers)
		}
	})

	// The chain counted them as calls, like any other.
	m, _ := scrape(t, w)
	var calls float64
	for k, v := range m {
		if strings.HasPrefix(k, "portico_requests_total{") && strings.Contains(k, `method="GetProduct"`) {
			calls += v
		}
	}
	if calls < float64(len(webProtocols)+1) {
		t.Errorf("portico_requests_total for GetProduct = %v, want at least %d", calls, len(webProtocols)+1)
	}
}

// TestConnectDeadlineCap: the edge cuts a Connect or gRPC-Web caller's
// deadline to the route's maximum, as its tap does a native caller's.
func TestConnectDeadlineCap(t *testing.T) {
	w := newWorld(t, false, func(c *gateway.Config) {
		sc := c.Services["orders.v1.OrderService"]
		sc.StreamMaxTimeout = 300 * time.Millisecond
		c.Services["orders.v1.OrderService"] = sc
	})
	w.startCatalog()
	w.startOrders(orders.WithStatusStep(0)) // a watch never ends by itself
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	created, err := ordersv1.NewOrderServiceClient(w.conn).CreateOrder(ctx, &ordersv1.CreateOrderRequest{
		Items: []*ordersv1.LineItem{{ProductId: "prd-000001", Quantity: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	for protocol, opts := range webProtocols {
		// The client asks for 10 s; the route allows 300 ms.
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		began := time.Now()
		stream, err := webClient[ordersv1.WatchOrderRequest, ordersv1.WatchOrderResponse](w, "/orders.v1.OrderService/WatchOrder", opts).
			CallServerStream(cctx, webRequest(&ordersv1.WatchOrderRequest{Id: created.GetOrder().GetId()}, map[string]string{"X-Api-Key": testAPIKey}))
		if err == nil {
			for stream.Receive() {
			}
			err = stream.Err()
		}
		took := time.Since(began)
		ccancel()
		if out := connectOutcome(err); out.code != codes.DeadlineExceeded || took > 5*time.Second {
			t.Errorf("%s: watch ended after %v with %+v, want DEADLINE_EXCEEDED after about 300ms", protocol, took, out)
		}
		t.Logf("%s: a 10s watch cut to the route's 300ms maximum: ended after %v", protocol, took.Round(time.Millisecond))
	}
}

// TestWebBodyLimit: a gRPC-Web or Connect body over the route's limit is
// refused as a REST body is: RESOURCE_EXHAUSTED, made by the gateway,
// counted as a call. A body that says its length is refused at once; one
// that hides it (chunked) as soon as the limit is passed, not answered
// UNAVAILABLE with the reader's error.
func TestWebBodyLimit(t *testing.T) {
	w := newWorld(t, false, func(c *gateway.Config) {
		sc := c.Services["catalog.v1.CatalogService"]
		sc.MaxBodyBytes = 64 << 10
		c.Services["catalog.v1.CatalogService"] = sc
	})
	w.startCatalog()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// hidden sends every body chunked, without a Content-Length.
	var chunked atomic.Int32
	hidden := &http.Client{Timeout: 15 * time.Second, Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		if r.Body != nil && r.Body != http.NoBody {
			r.Body, r.ContentLength, r.GetBody = io.NopCloser(struct{ io.Reader }{r.Body}), -1, nil
			chunked.Add(1)
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	big := &catalogv1.CreateProductRequest{Product: &catalogv1.Product{Sku: "BIG-1", Name: strings.Repeat("x", 1<<20), Currency: "EUR"}}
	refused := 0
	for length, client := range map[string]*http.Client{"with its length": httpClient, "chunked": hidden} {
		for protocol, opts := range webProtocols {
			_, err := connect.NewClient[catalogv1.CreateProductRequest, catalogv1.CreateProductResponse](client,
				w.base+"/catalog.v1.CatalogService/CreateProduct", opts...).
				CallUnary(ctx, webRequest(big, map[string]string{"X-Api-Key": testAPIKey}))
			refused++
			out := connectOutcome(err)
			var ce *connect.Error
			errors.As(err, &ce)
			if out.code != codes.ResourceExhausted || out.reason != "BAD_REQUEST" || !strings.Contains(out.message, "over the limit of 65536") ||
				ce == nil || ce.Meta().Get("X-Portico-Error-Source") != "gateway" {
				t.Errorf("%s, %s: a 1 MiB body over a 64 KiB limit: %+v, want RESOURCE_EXHAUSTED/BAD_REQUEST from the gateway as over REST", protocol, length, out)
			}
			t.Logf("%s, %s: a 1 MiB body over a 64 KiB limit: %s %q", protocol, length, out.code, out.message)
		}
		// The limit leaves calls under it alone.
		for protocol, opts := range webProtocols {
			if _, err := connect.NewClient[catalogv1.GetProductRequest, catalogv1.GetProductResponse](client,
				w.base+"/catalog.v1.CatalogService/GetProduct", opts...).
				CallUnary(ctx, webRequest(&catalogv1.GetProductRequest{Id: "prd-000001"}, nil)); err != nil {
				t.Errorf("%s, %s: GetProduct: %v", protocol, length, err)
			}
		}
	}
	if chunked.Load() == 0 {
		t.Fatal("no body was sent without its length")
	}
	// Refused before the chain, and counted as the REST door counts its
	// refusals.
	m, _ := scrape(t, w)
	const series = `portico_requests_total{code="ResourceExhausted",method="CreateProduct",service="catalog.v1.CatalogService",transport="grpc"}`
	if got := m[series]; got != float64(refused) {
		t.Errorf("%s = %v, want %d", series, got, refused)
	}
}

// TestGRPCWebTextNotBase64: a gRPC-Web text body that is not base64 is
// INVALID_ARGUMENT with a fixed message (the decoder's words stay in the
// log), and counted.
func TestGRPCWebTextNotBase64(t *testing.T) {
	w := newWorld(t, false)
	w.startCatalog()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", w.base+"/catalog.v1.CatalogService/GetProduct", strings.NewReader("AAAA!!not base64"))
	req.Header.Set("Content-Type", "application/grpc-web-text")
	req.Header.Set("X-Grpc-Web", "1")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// A trailers-only answer: the status in the headers.
	h := resp.Header
	if h.Get("Grpc-Status") != "3" || h.Get("Grpc-Message") != "the gRPC-Web text body is not base64" ||
		h.Get("X-Portico-Error-Source") != "gateway" || strings.Contains(string(text)+fmt.Sprint(h), "illegal") {
		t.Errorf("%d %v %q, want INVALID_ARGUMENT with a fixed message, from the gateway", resp.StatusCode, h, text)
	}
	m, _ := scrape(t, w)
	const series = `portico_requests_total{code="InvalidArgument",method="GetProduct",service="catalog.v1.CatalogService",transport="grpc"}`
	if got := m[series]; got != 1 {
		t.Errorf("%s = %v, want 1", series, got)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
