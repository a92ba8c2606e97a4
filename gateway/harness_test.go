package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/auth"
	"github.com/portico-gw/portico/gateway/stats"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/gen/openapi"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"github.com/portico-gw/portico/gen/registry"
	"github.com/portico-gw/portico/internal/testconsul"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/catalog"
	"github.com/portico-gw/portico/services/host"
	"github.com/portico-gw/portico/services/orders"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

func TestMain(m *testing.M) { os.Exit(testconsul.Main(m)) }

// world is one test's gateway, Consul and backends, all on real sockets.
type world struct {
	t       testing.TB
	agent   *testconsul.Agent
	consul  *api.Client
	gw      *gateway.Gateway
	base    string           // http://host:port of the REST listener
	conn    *grpc.ClientConn // sends testAPIKey, unless anon() made this world
	key     string           // API key sent with rest(); "" for anonymous
	catalog string           // Consul service names, unique per test
	orders  string
}

type worldOpt func(*gateway.Config)

// newWorld starts a gateway whose services point at Consul names unique to
// this test, so tests sharing one Consul agent never see each other's
// instances. private gives the test its own Consul agent.
func newWorld(t testing.TB, private bool, opts ...worldOpt) *world {
	t.Helper()
	return newWorldWith(t, private, nil, opts...)
}

// newWorldWith is newWorld with extra gateway options. Worlds made in the
// same test share the Consul service names, and so the backends.
func newWorldWith(t testing.TB, private bool, gwOpts []gateway.Option, opts ...worldOpt) *world {
	t.Helper()
	return newWorldOf(t, private, registry.Services(), gwOpts, opts...)
}

// newWorldOf is newWorldWith serving services.
func newWorldOf(t testing.TB, private bool, services []gateway.Service, gwOpts []gateway.Option, opts ...worldOpt) *world {
	t.Helper()
	var agent *testconsul.Agent
	if private {
		agent = testconsul.New(t)
	} else {
		agent = testconsul.Shared(t)
	}
	suffix := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	w := &world{t: t, agent: agent, consul: agent.Client(t), catalog: "catalog-" + suffix, orders: "orders-" + suffix}
	cfg := gateway.Config{
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		DrainDelay: 10 * time.Millisecond, // tests that drain say how long
		Consul:     discovery.ConsulConfig{Address: agent.Addr},
		Auth: auth.Config{APIKeys: []auth.APIKeyConfig{
			{Consumer: testConsumer, SHA256: auth.HashAPIKey(testAPIKey), Scopes: []string{"catalog.write"}},
		}},
		Services: map[string]gateway.ServiceConfig{
			"catalog.v1.CatalogService": {Backend: w.catalog},
			"orders.v1.OrderService":    {Backend: w.orders},
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	logs := &testutil.LockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	gw, err := gateway.New(cfg, services, append([]gateway.Option{
		gateway.WithLogger(slog.New(slog.NewTextHandler(logs, nil))),
		// Access log lines join the gateway's log, shown when a test fails.
		gateway.WithStatsOptions(stats.WithAccessLog(slog.New(slog.NewJSONHandler(logs, nil)))),
		gateway.WithResolverOptions(discovery.WithBackoff(50*time.Millisecond, 500*time.Millisecond), discovery.WithWaitTime(5*time.Second)),
		gateway.WithOpenAPI(openapi.Document),
	}, gwOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = gw.Shutdown(ctx)
	})
	w.gw = gw
	w.base = "http://" + gw.HTTPAddr()
	w.conn = dial(t, gw.GRPCAddr(), testAPIKey)
	w.key = testAPIKey
	return w
}

// The API key every world accepts, for consumer "tester" with catalog.write.
const (
	testAPIKey   = "pk_test_3b1f0c8e5a7d4e2f9c6b1a0d8e7f6c5b"
	testConsumer = "tester"
)

// dial connects to the gateway's gRPC port; a non-empty key is sent as
// x-api-key on every call.
func dial(t testing.TB, addr, key string) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if key != "" {
		opts = append(opts,
			grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
				return invoker(metadata.AppendToOutgoingContext(ctx, auth.APIKeyHeader, key), method, req, reply, cc, o...)
			}),
			grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, o ...grpc.CallOption) (grpc.ClientStream, error) {
				return streamer(metadata.AppendToOutgoingContext(ctx, auth.APIKeyHeader, key), desc, cc, method, o...)
			}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// anon is the same world seen by a caller without credentials.
func (w *world) anon() *world {
	c := *w
	c.key = ""
	c.conn = dial(w.t, w.gw.GRPCAddr(), "")
	return &c
}

func (w *world) catalogClient() catalogv1.CatalogServiceClient {
	return catalogv1.NewCatalogServiceClient(w.conn)
}

func (w *world) ordersClient() ordersv1.OrderServiceClient {
	return ordersv1.NewOrderServiceClient(w.conn)
}

// startCatalog runs one catalog instance registered in Consul and waits
// until Consul reports it healthy.
func (w *world) startCatalog(opts ...catalog.Option) *host.Host {
	w.t.Helper()
	srv := catalog.NewServer(opts...)
	return w.startHost(w.catalog, func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, srv) })
}

func (w *world) startOrders(opts ...orders.Option) *host.Host {
	w.t.Helper()
	cc, err := discovery.NewClient(w.consul, w.catalog)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { cc.Close() })
	srv := orders.NewServer(catalogv1.NewCatalogServiceClient(cc), opts...)
	w.t.Cleanup(srv.Close)
	return w.startHost(w.orders, func(s *grpc.Server) { ordersv1.RegisterOrderServiceServer(s, srv) })
}

func (w *world) startHost(name string, register func(*grpc.Server)) *host.Host {
	w.t.Helper()
	return w.startHostWith(host.Config{Name: name, Register: register})
}

// startHostWith starts an instance on loopback, registered in Consul with a
// short check interval, and waits until the gateway routes to it.
func (w *world) startHostWith(cfg host.Config) *host.Host {
	w.t.Helper()
	name := cfg.Name
	cfg.Addr, cfg.CheckInterval = "127.0.0.1:0", 250*time.Millisecond
	h, err := host.Start(context.Background(), cfg, w.consul)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		h.Stop(ctx)
	})
	w.waitPassing(name, h.ID())
	w.waitRouted(name, h.ID())
	return h
}

// routed lists the instances of service that the gateway's resolver has,
// as the admin API reports them; ok is false for gateways without an
// admin API (WithoutPolicies).
func (w *world) routed(service string) (ids []string, ok bool) {
	b, ok := w.backend(service)
	for _, in := range b.Instances {
		ids = append(ids, in.ID)
	}
	return ids, ok
}

// backendView is a backend as the admin API shows it.
type backendView struct {
	Name        string
	WatchErrors int `json:",string"` // protojson writes uint64 as a string
	Instances   []struct{ ID string }
}

// backend is the admin API's view of one backend.
func (w *world) backend(service string) (backendView, bool) {
	w.t.Helper()
	resp, err := httpClient.Get("http://" + w.gw.AdminAddr() + "/admin/v1/backends")
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return backendView{}, false
	}
	var body struct{ Backends []backendView }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		w.t.Fatal(err)
	}
	for _, b := range body.Backends {
		if b.Name == service {
			return b, true
		}
	}
	return backendView{Name: service}, true
}

// waitRouted waits until the gateway's resolver has the instance: Consul
// passing it is not enough, the gateway's watch may not have answered yet,
// and a call in between fails fast with 503. Gateways without stats
// (WithoutPolicies) report no instances; their callers retry on their own.
func (w *world) waitRouted(service, id string) {
	w.t.Helper()
	testutil.Eventually(w.t, 20*time.Second, "the gateway to route to "+id+" of "+service, func() bool {
		ids, ok := w.routed(service)
		return !ok || slices.Contains(ids, id)
	})
}

// waitRoutedExactly waits until the gateway's resolver has exactly the
// given instances of service (none, when ids is empty).
func (w *world) waitRoutedExactly(service string, ids ...string) {
	w.t.Helper()
	testutil.Eventually(w.t, 20*time.Second, fmt.Sprintf("the gateway to route to exactly %v of %s", ids, service), func() bool {
		got, ok := w.routed(service)
		slices.Sort(got)
		want := slices.Sorted(slices.Values(ids))
		return ok && slices.Equal(got, want)
	})
}

// waitPassing waits until Consul lists the instance as passing.
func (w *world) waitPassing(service, id string) {
	w.t.Helper()
	testutil.Eventually(w.t, 20*time.Second, "consul to list "+id+" of "+service+" as passing", func() bool {
		entries, _, err := w.consul.Health().Service(service, "", true, nil)
		return err == nil && slices.ContainsFunc(entries, func(e *api.ServiceEntry) bool { return e.Service.ID == id })
	})
}

// waitHealthy waits until Consul lists exactly the given instances of a
// service as passing.
func (w *world) waitHealthy(service string, ids ...string) {
	w.t.Helper()
	testutil.Eventually(w.t, 20*time.Second, fmt.Sprintf("consul to list exactly %v as the passing instances of %s", ids, service), func() bool {
		entries, _, err := w.consul.Health().Service(service, "", true, nil)
		return err == nil && sameIDs(entries, ids)
	})
}

func sameIDs(entries []*api.ServiceEntry, ids []string) bool {
	if len(entries) != len(ids) {
		return false
	}
	seen := map[string]bool{}
	for _, e := range entries {
		seen[e.Service.ID] = true
	}
	for _, id := range ids {
		if !seen[id] {
			return false
		}
	}
	return true
}

// restResponse is a decoded REST reply.
type restResponse struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
}

var httpClient = &http.Client{Timeout: 15 * time.Second}

func (w *world) rest(method, path string, body any) restResponse {
	w.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			w.t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, w.base+path, r)
	if err != nil {
		w.t.Fatal(err)
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if w.key != "" {
		req.Header.Set("X-Api-Key", w.key)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		w.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatal(err)
	}
	out := restResponse{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	if len(raw) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out.Body); err != nil {
			w.t.Fatalf("%s %s: body is not JSON: %v\n%s", method, path, err, raw)
		}
	}
	return out
}

// field walks a decoded JSON body: field(b, "product", "id").
func field(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

// errorInfo returns the reason of the google.rpc.ErrorInfo in a Status body.
func errorInfo(body map[string]any) (reason, domain string) {
	details, _ := body["details"].([]any)
	for _, d := range details {
		m, _ := d.(map[string]any)
		if m["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" {
			r, _ := m["reason"].(string)
			dom, _ := m["domain"].(string)
			return r, dom
		}
	}
	return "", ""
}
