package host

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/catalog"
	"github.com/portico-gw/portico/services/orders"
)

// startHost runs the catalog and orders services on one Host without Consul.
// orders gets no catalog client: the tests here only call methods that do
// not need one.
func startHost(t *testing.T) (*Host, *grpc.ClientConn) {
	t.Helper()
	ord := orders.NewServer(nil, orders.WithStatusStep(0))
	t.Cleanup(ord.Close)
	h, err := Start(context.Background(), Config{
		Name: "catalog",
		Register: func(s *grpc.Server) {
			catalogv1.RegisterCatalogServiceServer(s, catalog.NewServer())
			ordersv1.RegisterOrderServiceServer(s, ord)
		},
	}, nil)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(h.Kill)
	conn, err := grpc.NewClient("passthrough:///"+h.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return h, conn
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantInstanceID(t *testing.T, md metadata.MD, id, what string) {
	t.Helper()
	if got := md.Get(InstanceIDHeader); len(got) != 1 || got[0] != id {
		t.Errorf("%s: %s = %v, want [%s]", what, InstanceIDHeader, got, id)
	}
}

func TestStartDefaults(t *testing.T) {
	h, _ := startHost(t)
	if !strings.HasPrefix(h.ID(), "catalog-") || len(h.ID()) <= len("catalog-") {
		t.Errorf("ID = %q, want catalog-<random>", h.ID())
	}
	host, port, err := net.SplitHostPort(h.Addr())
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Errorf("Addr = %q, want 127.0.0.1 and a real port", h.Addr())
	}
	other, _ := startHost(t)
	if other.ID() == h.ID() {
		t.Errorf("two hosts share the id %q", h.ID())
	}
}

func TestInstanceIDOnUnary(t *testing.T) {
	ctx := testCtx(t)
	h, conn := startHost(t)
	c := catalogv1.NewCatalogServiceClient(conn)

	var header metadata.MD
	if _, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"}, grpc.Header(&header)); err != nil {
		t.Fatalf("GetProduct: %v", err)
	}
	wantInstanceID(t, header, h.ID(), "success")

	// An error names the instance in its trailer and sends no header: a
	// trailers-only answer, which a client's retry policy may retry.
	header = nil
	var trailer metadata.MD
	_, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-999999"}, grpc.Header(&header), grpc.Trailer(&trailer))
	if status.Code(err) != codes.NotFound {
		t.Fatalf("GetProduct(unknown) = %v, want NotFound", err)
	}
	wantInstanceID(t, trailer, h.ID(), "error")
	if len(header) != 0 {
		t.Errorf("error sent headers %v: it would not be retried", header)
	}
}

func TestInstanceIDOnStream(t *testing.T) {
	ctx := testCtx(t)
	h, conn := startHost(t)

	// A stream that sends messages.
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	resp, err := watch.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health watch = %v, want SERVING", resp.GetStatus())
	}
	header, err := watch.Header()
	if err != nil {
		t.Fatalf("Header: %v", err)
	}
	wantInstanceID(t, header, h.ID(), "stream")

	// A stream that fails before its first message.
	oc := ordersv1.NewOrderServiceClient(conn)
	failing, err := oc.WatchOrder(ctx, &ordersv1.WatchOrderRequest{Id: "ord-424242"})
	if err != nil {
		t.Fatalf("WatchOrder: %v", err)
	}
	if _, err := failing.Recv(); status.Code(err) != codes.NotFound {
		t.Fatalf("WatchOrder(unknown) = %v, want NotFound", err)
	}
	wantInstanceID(t, failing.Trailer(), h.ID(), "failed stream")
}

func TestHealth(t *testing.T) {
	ctx := testCtx(t)
	_, conn := startHost(t)
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", "catalog.v1.CatalogService", "orders.v1.OrderService"} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Errorf("Check(%q): %v", svc, err)
			continue
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, want SERVING", svc, resp.GetStatus())
		}
	}
	_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope.v1.Nothing"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("Check(unknown service) = %v, want NotFound", err)
	}
}

func TestReflection(t *testing.T) {
	ctx := testCtx(t)
	_, conn := startHost(t)
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("ServerReflectionInfo: %v", err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"catalog.v1.CatalogService", "orders.v1.OrderService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	_ = stream.CloseSend()
}

func TestStopIsGraceful(t *testing.T) {
	ctx := testCtx(t)
	h, conn := startHost(t)
	hc := healthpb.NewHealthClient(conn)
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("Recv: %v", err)
	}

	// The health watch never ends by itself, so Stop must fall back to a
	// hard stop when its context ends.
	stopCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := h.Stop(stopCtx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Stop took %v with a 200ms grace", took)
	}
	select {
	case <-h.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if h.Err() != nil {
		t.Errorf("Err after Stop = %v, want nil", h.Err())
	}

	// The watcher saw the server go NOT_SERVING before the end, or just the end.
	for range 5 {
		resp, err := watch.Recv()
		if err != nil {
			break
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health still SERVING during Stop")
		}
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Check after Stop = %v, want Unavailable", err)
	}
}

func TestStopWaitsForUnaryCalls(t *testing.T) {
	ctx := testCtx(t)
	release := make(chan struct{})
	entered := make(chan struct{})
	h, err := Start(ctx, Config{Name: "slow", Register: func(s *grpc.Server) {
		catalogv1.RegisterCatalogServiceServer(s, &slowCatalog{entered: entered, release: release})
	}}, nil)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	conn, err := grpc.NewClient("passthrough:///"+h.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()

	callErr := make(chan error, 1)
	go func() {
		_, err := catalogv1.NewCatalogServiceClient(conn).GetProduct(ctx, &catalogv1.GetProductRequest{Id: "x"})
		callErr <- err
	}()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("call never reached the handler")
	}
	stopped := make(chan error, 1)
	go func() { stopped <- h.Stop(ctx) }()
	// Stop closes the listener when it starts to drain; from then on it
	// can only return once the call it waits for is released.
	testutil.Eventually(t, 5*time.Second, "Stop to close the listener", func() bool {
		c, err := net.DialTimeout("tcp", h.Addr(), time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a call was in flight", err)
	default:
	}
	close(release)
	if err := <-callErr; err != nil {
		t.Errorf("in-flight call = %v, want it to finish", err)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("Stop: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Stop did not return after the call finished")
	}
}

type slowCatalog struct {
	catalogv1.UnimplementedCatalogServiceServer
	entered, release chan struct{}
}

func (s *slowCatalog) GetProduct(context.Context, *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	close(s.entered)
	<-s.release
	return &catalogv1.GetProductResponse{}, nil
}

func TestKill(t *testing.T) {
	ctx := testCtx(t)
	h, conn := startHost(t)
	c := catalogv1.NewCatalogServiceClient(conn)
	if _, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"}); err != nil {
		t.Fatalf("GetProduct: %v", err)
	}
	h.Kill()
	if _, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("GetProduct after Kill = %v, want Unavailable", err)
	}
	if _, err := net.DialTimeout("tcp", h.Addr(), time.Second); err == nil {
		t.Fatal("listener still accepts after Kill")
	}
}

func TestStartErrors(t *testing.T) {
	ctx := testCtx(t)
	noop := func(*grpc.Server) {}
	if _, err := Start(ctx, Config{Register: noop}, nil); err == nil {
		t.Error("Start without Name succeeded")
	}
	if _, err := Start(ctx, Config{Name: "x"}, nil); err == nil {
		t.Error("Start without Register succeeded")
	}
	if _, err := Start(ctx, Config{Name: "x", Addr: "127.0.0.1:bad", Register: noop}, nil); err == nil {
		t.Error("Start on a bad address succeeded")
	}
}

func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(testCtx(t))
	var logs testutil.LockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Name: "catalog", Register: func(s *grpc.Server) {
			catalogv1.RegisterCatalogServiceServer(s, catalog.NewServer())
		}}, nil, logger)
	}()
	// Run logs "serving" once listening.
	testutil.Eventually(t, 5*time.Second, "Run to log that it is serving", func() bool {
		return strings.Contains(logs.String(), "msg=serving")
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	for _, want := range []string{"addr=127.0.0.1:", "instance=catalog-", "msg=stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
}

func TestConsulFlags(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := ConsulFlags(fs)
	if err := fs.Parse([]string{"-consul-addr=10.0.0.1:8500", "-consul-token=secret", "-consul-dc=eu1"}); err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.Address != "10.0.0.1:8500" || cfg.Token != "secret" || cfg.Datacenter != "eu1" {
		t.Errorf("ConsulFlags = %+v", *cfg)
	}
	var help strings.Builder
	fs.SetOutput(&help)
	fs.PrintDefaults()
	if strings.Contains(help.String(), "secret") {
		t.Errorf("-help shows the token:\n%s", help.String())
	}
}

func TestAdvertised(t *testing.T) {
	tests := []struct {
		addr net.Addr
		host string
		port int
	}{
		{&net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 80}, "10.1.2.3", 80},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 81}, "127.0.0.1", 81},
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 82}, "127.0.0.1", 82},
		{&net.TCPAddr{Port: 83}, "127.0.0.1", 83},
	}
	for _, tt := range tests {
		host, port := advertised(tt.addr)
		if host != tt.host || port != tt.port {
			t.Errorf("advertised(%v) = %s:%d, want %s:%d", tt.addr, host, port, tt.host, tt.port)
		}
	}
}
