package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/stats"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	adminv1 "github.com/portico-gw/portico/gen/portico/admin/v1"
	"github.com/portico-gw/portico/gen/registry"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/catalog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// get sends a GET with extra headers and returns the status and body.
func get(t *testing.T, url string, header map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// scrape reads /metrics as Prometheus would and returns each sample line's
// value by series (name{labels}, labels sorted by name as the exposition
// writes them).
func scrape(t *testing.T, w *world) (map[string]float64, string) {
	t.Helper()
	code, body := get(t, "http://"+w.gw.AdminAddr()+"/metrics", nil)
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, string(body)
}

// TestMetricsAfterRESTAndGRPCTraffic scrapes /metrics after calls over both
// doors and checks every family the gateway promises.
func TestMetricsAfterRESTAndGRPCTraffic(t *testing.T) {
	// An extra policy that refuses one product id, as validation would.
	refuse := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if r, ok := req.(*catalogv1.GetProductRequest); ok && r.GetId() == "prd-refused" {
			return nil, policy.Reject(codes.InvalidArgument, "validation", "TEST_REFUSED", "refused by the test", nil)
		}
		return handler(ctx, req)
	}
	w := newWorldWith(t, false, []gateway.Option{gateway.WithUnaryInterceptors(refuse)})
	inst := w.startCatalog()
	if r := w.rest("GET", "/v1/products/prd-000001", nil); r.Status != 200 {
		t.Fatalf("rest: %d %s", r.Status, r.Raw)
	}
	if _, err := w.catalogClient().GetProduct(context.Background(), &catalogv1.GetProductRequest{Id: "prd-000001"}); err != nil {
		t.Fatalf("grpc: %v", err)
	}
	if r := w.rest("GET", "/v1/products/prd-refused", nil); r.Status != http.StatusBadRequest {
		t.Fatalf("refused call: %d %s", r.Status, r.Raw)
	}

	m, text := scrape(t, w)
	svc := `method="GetProduct",service="catalog.v1.CatalogService"`
	be := `backend="` + w.catalog + `"`
	atLeast := map[string]float64{
		`portico_requests_total{code="OK",` + svc + `,transport="rest"}`:                                                              1,
		`portico_requests_total{code="OK",` + svc + `,transport="grpc"}`:                                                              1,
		`portico_requests_total{code="InvalidArgument",` + svc + `,transport="rest"}`:                                                 1,
		`portico_request_duration_seconds_count{` + svc + `,transport="rest"}`:                                                        2,
		`portico_request_duration_seconds_bucket{` + svc + `,transport="grpc",le="+Inf"}`:                                             1,
		`portico_request_message_bytes_total{` + svc + `,transport="rest"}`:                                                           1,
		`portico_response_message_bytes_total{` + svc + `,transport="grpc"}`:                                                          1,
		`portico_rejections_total{method="GetProduct",policy="validation",reason="TEST_REFUSED",service="catalog.v1.CatalogService"}`: 1,
		`portico_backend_healthy_instances{` + be + `}`:                                                                               1,
		`portico_consul_watch_age_seconds{` + be + `}`:                                                                                0,
		`portico_backend_requests_total{` + be + `,code="OK",instance="` + inst.ID() + `"}`:                                           2,
		`portico_backend_request_duration_seconds_count{` + be + `,instance="` + inst.ID() + `"}`:                                     2,
	}
	for series, min := range atLeast {
		if v, ok := m[series]; !ok || v < min {
			t.Errorf("%s = %v (present: %v), want at least %v", series, v, ok, min)
		}
	}
	for series, want := range map[string]float64{
		`portico_requests_in_flight{` + svc + `,transport="rest"}`:                                                                    0,
		`portico_rejections_total{method="GetProduct",policy="validation",reason="TEST_REFUSED",service="catalog.v1.CatalogService"}`: 1,
		`portico_consul_watch_errors_total{` + be + `}`:                                                                               0,
	} {
		if v, ok := m[series]; !ok || v != want {
			t.Errorf("%s = %v (present: %v), want %v", series, v, ok, want)
		}
	}
	// Label values come from the route table, never from the request.
	if strings.Contains(text, "prd-") || strings.Contains(text, "/v1/") {
		t.Errorf("/metrics carries client input:\n%s", text)
	}
}

// TestAccessLogLines checks one line per call with the promised fields, and
// that no credential reaches the log.
// TestAccessLogLines checks the access log's lines, written by slog's JSON
// handler (stats.WithAccessLog) and by the JSON access log's own encoder
// (stats.WithJSONAccessLog, what the config's json format uses).
func TestAccessLogLines(t *testing.T) {
	t.Run("slog", func(t *testing.T) {
		var buf testutil.LockedBuffer
		testAccessLogLines(t, &buf, stats.WithAccessLog(slog.New(slog.NewJSONHandler(&buf, nil))))
	})
	t.Run("own encoder", func(t *testing.T) {
		var buf testutil.LockedBuffer
		testAccessLogLines(t, &buf, stats.WithJSONAccessLog(&buf))
	})
}

func testAccessLogLines(t *testing.T, buf *testutil.LockedBuffer, logOpt stats.Option) {
	w := newWorldWith(t, false, []gateway.Option{gateway.WithStatsOptions(logOpt)})
	inst := w.startCatalog()
	const (
		traceID = "0af7651916cd43dd8448eb211c80319c"
		bogus   = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.c2VjcmV0LXNpZ25hdHVyZQ"
	)
	product := w.base + "/v1/products/prd-000001"
	if code, body := get(t, product, map[string]string{"X-Api-Key": testAPIKey, "Traceparent": "00-" + traceID + "-b7ad6b7169203331-01"}); code != 200 {
		t.Fatalf("with a key: %d %s", code, body)
	}
	if code, _ := get(t, product, map[string]string{"Authorization": "Bearer " + bogus}); code != http.StatusUnauthorized {
		t.Fatalf("with a bogus token: %d, want 401", code)
	}
	if _, err := w.catalogClient().ListProducts(context.Background(), &catalogv1.ListProductsRequest{}); err != nil {
		t.Fatal(err)
	}

	// A buffered log writes its lines out at least every 100ms.
	testutil.Eventually(t, 5*time.Second, "three access log lines", func() bool { return strings.Count(buf.String(), "\n") >= 3 })
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		lines = append(lines, m)
	}
	if len(lines) != 3 {
		t.Fatalf("want 3 lines, one per call, got %d:\n%s", len(lines), buf.String())
	}
	expect := []map[string]any{{
		"msg": "call", "transport": "rest", "route": "GET /v1/products/{id}", "method": "/catalog.v1.CatalogService/GetProduct",
		"status": float64(200), "code": "OK", "consumer": testConsumer, "client_ip": "127.0.0.1",
		"backend": w.catalog, "instance": inst.ID(), "trace_id": traceID,
	}, {
		"transport": "rest", "status": float64(401), "code": "Unauthenticated", "rejected_by": "auth",
		"consumer": nil, "instance": nil,
	}, {
		"transport": "grpc", "method": "/catalog.v1.CatalogService/ListProducts", "code": "OK", "consumer": testConsumer,
		"route": nil, "status": nil, "instance": inst.ID(),
	}}
	for i, want := range expect {
		for k, v := range want {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v\n%v", i, k, lines[i][k], v, lines[i])
			}
		}
	}
	for _, k := range []string{"time", "latency", "bytes_in", "bytes_out"} {
		if _, ok := lines[0][k]; !ok {
			t.Errorf("line 0 lacks %s: %v", k, lines[0])
		}
	}
	if lines[0]["bytes_out"].(float64) <= 0 {
		t.Errorf("bytes_out = %v", lines[0]["bytes_out"])
	}
	// The REST request's size is its protobuf encoding's, as a gRPC
	// caller's would be.
	if got, want := lines[0]["bytes_in"], float64(proto.Size(&catalogv1.GetProductRequest{Id: "prd-000001"})); got != want {
		t.Errorf("bytes_in = %v, want %v", got, want)
	}
	for _, secret := range []string{testAPIKey, bogus, "eyJ"} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("the access log leaks %q", secret)
		}
	}
}

// tracedCatalog records the traceparent each GetProduct arrives with.
type tracedCatalog struct {
	catalogv1.CatalogServiceServer
	mu   sync.Mutex
	seen []string
}

func (c *tracedCatalog) GetProduct(ctx context.Context, req *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	c.mu.Lock()
	c.seen = append(c.seen, strings.Join(metadata.ValueFromIncomingContext(ctx, "traceparent"), ","))
	c.mu.Unlock()
	return c.CatalogServiceServer.GetProduct(ctx, req)
}

func (c *tracedCatalog) last() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[len(c.seen)-1]
}

// TestTraceEndToEnd follows one trace from a client through the gateway to
// the backend, over each door, with spans in an in-memory exporter.
func TestTraceEndToEnd(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	w := newWorldWith(t, false, []gateway.Option{gateway.WithStatsOptions(stats.WithTracerProvider(tp))})
	backend := &tracedCatalog{CatalogServiceServer: catalog.NewServer()}
	w.startHost(w.catalog, func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, backend) })

	for _, tc := range []struct {
		transport, traceID, parent string
		call                       func(traceparent string) error
	}{
		{"rest", "11111111111111111111111111111111", "1111111111111111", func(tp string) error {
			if code, body := get(t, w.base+"/v1/products/prd-000001", map[string]string{"traceparent": tp}); code != 200 {
				return status.Errorf(codes.Unknown, "%d %s", code, body)
			}
			return nil
		}},
		{"grpc", "22222222222222222222222222222222", "2222222222222222", func(tp string) error {
			ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", tp)
			_, err := w.catalogClient().GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"})
			return err
		}},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			if err := tc.call("00-" + tc.traceID + "-" + tc.parent + "-01"); err != nil {
				t.Fatal(err)
			}
			var server, client *tracetest.SpanStub
			for _, s := range exp.GetSpans() {
				if s.SpanContext.TraceID().String() != tc.traceID {
					continue
				}
				switch s.SpanKind {
				case trace.SpanKindServer:
					server = &s
				case trace.SpanKindClient:
					client = &s
				}
			}
			if server == nil || client == nil {
				t.Fatalf("want a server and a client span in trace %s, got %v", tc.traceID, exp.GetSpans().Snapshots())
			}
			if server.Parent.SpanID().String() != tc.parent || !server.Parent.IsRemote() {
				t.Errorf("server span's parent = %v, want the caller's span %s", server.Parent.SpanID(), tc.parent)
			}
			if client.Parent.SpanID() != server.SpanContext.SpanID() {
				t.Errorf("client span's parent = %v, want the server span %v", client.Parent.SpanID(), server.SpanContext.SpanID())
			}
			if want := "00-" + tc.traceID + "-" + client.SpanContext.SpanID().String() + "-01"; backend.last() != want {
				t.Errorf("backend saw traceparent %q, want %q", backend.last(), want)
			}
			transport := ""
			for _, kv := range server.Attributes {
				if kv.Key == "portico.transport" {
					transport = kv.Value.AsString()
				}
			}
			if transport != tc.transport {
				t.Errorf("server span portico.transport = %q, want %q", transport, tc.transport)
			}
		})
	}
}

// TestReadinessRequiresBackends: with the switch on, /readyz fails until
// every backend has a healthy instance.
func TestReadinessRequiresBackends(t *testing.T) {
	w := newWorld(t, false, func(c *gateway.Config) { c.Stats.ReadinessRequiresBackends = true })
	readyz := func() (int, string) {
		code, body := get(t, "http://"+w.gw.AdminAddr()+"/readyz", nil)
		var r struct{ Reason string }
		_ = json.Unmarshal(body, &r)
		return code, r.Reason
	}
	waitReady := func(what string, cond func(int, string) bool) {
		t.Helper()
		testutil.Eventually(t, 20*time.Second, "/readyz: "+what, func() bool { return cond(readyz()) })
	}
	waitReady("no instances", func(code int, reason string) bool {
		return code == http.StatusServiceUnavailable && strings.Contains(reason, "has no healthy instance")
	})
	w.startCatalog()
	waitReady("catalog only", func(code int, reason string) bool {
		return code == http.StatusServiceUnavailable && strings.Contains(reason, w.orders)
	})
	w.startOrders()
	waitReady("both", func(code int, _ string) bool { return code == 200 })
}

// TestAdminAPI reads the admin API over REST and over gRPC on the admin
// port, and checks the page and its assets are served.
func TestAdminAPI(t *testing.T) {
	w := newWorld(t, false)
	inst := w.startCatalog()
	if r := w.rest("GET", "/v1/products/prd-000001", nil); r.Status != 200 {
		t.Fatalf("rest: %d %s", r.Status, r.Raw)
	}
	admin := "http://" + w.gw.AdminAddr()
	getJSON := func(path string, v any) {
		t.Helper()
		code, body := get(t, admin+path, nil)
		if code != 200 {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("%s: %v\n%s", path, err, body)
		}
	}

	var routes struct {
		Routes []struct {
			Method, Backend, Kind string
			HTTP                  []string `json:"http"`
			Policy                struct{ Access string }
		}
	}
	getJSON("/admin/v1/routes", &routes)
	found := false
	for _, r := range routes.Routes {
		if r.Method == "/catalog.v1.CatalogService/GetProduct" {
			found = true
			if len(r.HTTP) != 1 || r.HTTP[0] != "GET /v1/products/{id}" || r.Backend != w.catalog || r.Kind != "unary" || r.Policy.Access != "public" {
				t.Errorf("GetProduct route = %+v", r)
			}
		}
	}
	if !found || len(routes.Routes) != len(w.gw.Routes()) {
		t.Errorf("routes: %+v", routes)
	}

	var traffic struct {
		Routes []struct {
			Method   string
			Requests string // uint64 is a JSON string
		}
	}
	getJSON("/admin/v1/traffic", &traffic)
	for _, r := range traffic.Routes {
		if r.Method == "/catalog.v1.CatalogService/GetProduct" && r.Requests != "1" {
			t.Errorf("GetProduct requests = %s, want 1", r.Requests)
		}
	}

	var limits struct {
		Mode     string
		Replicas int
		Methods  []struct{ Method string }
	}
	getJSON("/admin/v1/rate-limits", &limits)
	if len(limits.Methods) == 0 || limits.Mode != "local" || limits.Replicas != 1 {
		t.Errorf("rate limits = %+v; the catalog declares some, enforced locally", limits)
	}

	// gRPC on the same port, over h2c.
	conn, err := grpc.NewClient(w.gw.AdminAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ac := adminv1.NewAdminServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bs, err := ac.ListBackends(ctx, &adminv1.ListBackendsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var catalogBackend *adminv1.Backend
	for _, b := range bs.GetBackends() {
		if b.GetName() == w.catalog {
			catalogBackend = b
		}
	}
	if catalogBackend == nil || len(catalogBackend.GetInstances()) != 1 || catalogBackend.GetInstances()[0].GetId() != inst.ID() ||
		catalogBackend.GetInstances()[0].GetCalls() != 1 || catalogBackend.GetLastWatchOk() == nil {
		t.Errorf("catalog backend = %v", catalogBackend)
	}
	if bi, err := ac.GetBuildInfo(ctx, &adminv1.GetBuildInfoRequest{}); err != nil || bi.GetGoVersion() == "" {
		t.Errorf("build info: %v %v", bi, err)
	}

	// The admin API is the gateway's own: its public gRPC port does not serve it.
	if _, err := adminv1.NewAdminServiceClient(w.conn).ListRoutes(ctx, &adminv1.ListRoutesRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("admin API on the public port: %v, want UNIMPLEMENTED", err)
	}

	for path, want := range map[string]string{"/": `<script src="/ui/app.js">`, "/ui/app.js": "/admin/v1/traffic", "/ui/style.css": "table"} {
		if code, body := get(t, admin+path, nil); code != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d, body lacks %q", path, code, want)
		}
	}
}

// TestStatsConfig reads the stats block and refuses what it cannot honour
// at start, naming the key.
func TestStatsConfig(t *testing.T) {
	cfg, err := gateway.LoadConfig(writeConfig(t, `
stats:
  access_log: {enabled: false, format: text, sample: 0.25, disabled_routes: [catalog.v1.CatalogService]}
  tracing: {otlp_endpoint: "http://127.0.0.1:4317", sample_ratio: 0.5}
  readiness_requires_backends: true
`))
	if err != nil {
		t.Fatal(err)
	}
	st := cfg.Stats
	if *st.AccessLog.Enabled || st.AccessLog.Format != "text" || *st.AccessLog.Sample != 0.25 || st.AccessLog.DisabledRoutes[0] != "catalog.v1.CatalogService" ||
		st.Tracing.OTLPEndpoint != "http://127.0.0.1:4317" || *st.Tracing.SampleRatio != 0.5 || !st.ReadinessRequiresBackends {
		t.Errorf("stats config = %+v", st)
	}
	if _, err := gateway.New(cfg, registry.Services()); err != nil {
		t.Errorf("a valid stats config: %v", err)
	}

	for body, want := range map[string]string{
		"stats: {access_log: {format: xml}}":                                 "access_log.format",
		"stats: {access_log: {sample: 2}}":                                   "access_log.sample",
		"stats: {access_log: {disabled_routes: [nope.v1.Nope/Get]}}":         "nope.v1.Nope/Get",
		"stats: {tracing: {otlp_endpoint: collector:4317}}":                  "collector:4317",
		"stats: {tracing: {otlp_endpoint: http://c:4317, sample_ratio: -1}}": "tracing.sample_ratio",
	} {
		cfg, err := gateway.ParseConfig(strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if _, err := gateway.New(cfg, registry.Services()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one naming %q", body, err, want)
		}
	}
}
