package host

import (
	"context"
	"flag"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"github.com/portico-gw/portico/services/catalog"
)

func startFaulty(t *testing.T, f Faults) (*Host, *grpc.ClientConn) {
	t.Helper()
	h, err := Start(context.Background(), Config{
		Name:     "catalog",
		Register: func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, catalog.NewServer()) },
		Faults:   f,
	}, nil)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(h.Kill)
	conn, err := grpc.NewClient("passthrough:///"+h.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return h, conn
}

func TestFaultFailRateAnswersUnavailableButHealthPasses(t *testing.T) {
	h, conn := startFaulty(t, Faults{FailRate: 1})
	ctx := testCtx(t)
	for range 5 {
		_, err := catalogv1.NewCatalogServiceClient(conn).GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"})
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "injected fault") {
			t.Fatalf("GetProduct: %v, want the injected UNAVAILABLE", err)
		}
	}
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v, want SERVING: faults never touch health", hr, err)
	}
	if n := h.Received(catalogv1.CatalogService_GetProduct_FullMethodName); n != 5 {
		t.Errorf("Received = %d, want 5 (faulted calls count)", n)
	}
	if n := h.Received(healthpb.Health_Check_FullMethodName); n != 1 {
		t.Errorf("Received(health) = %d, want 1", n)
	}
}

func TestFaultHangEndsAtTheCallersDeadline(t *testing.T) {
	_, conn := startFaulty(t, Faults{HangRate: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := catalogv1.NewCatalogServiceClient(conn).GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("GetProduct: %v, want DEADLINE_EXCEEDED", err)
	}
}

func TestFaultDelayIsAddedToEveryCall(t *testing.T) {
	const delay = 150 * time.Millisecond
	_, conn := startFaulty(t, Faults{Delay: delay})
	start := time.Now()
	if _, err := catalogv1.NewCatalogServiceClient(conn).GetProduct(testCtx(t), &catalogv1.GetProductRequest{Id: "prd-000001"}); err != nil {
		t.Fatal(err)
	}
	// A lower bound only: the delay is a floor, never a ceiling.
	if took := time.Since(start); took < delay {
		t.Fatalf("call took %v, want at least the %v delay", took, delay)
	}
}

func TestFaultFlagsAndValidation(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	f := FaultFlags(fs)
	if err := fs.Parse([]string{"-fail-rate", "0.5", "-delay", "200ms", "-hang-rate", "0.1"}); err != nil {
		t.Fatal(err)
	}
	if *f != (Faults{FailRate: 0.5, Delay: 200 * time.Millisecond, HangRate: 0.1}) || !f.Enabled() {
		t.Fatalf("flags = %+v", *f)
	}
	for _, bad := range []Faults{{FailRate: 1.5}, {HangRate: -0.1}, {Delay: -time.Second}} {
		if _, err := Start(context.Background(), Config{Name: "x", Register: func(*grpc.Server) {}, Faults: bad}, nil); err == nil {
			t.Errorf("Start with %+v: no error", bad)
		}
	}
}
