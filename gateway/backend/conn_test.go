package backend

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
)

func TestServiceConfigIsAcceptedByGRPC(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	methods := []Method{
		{Service: "catalog.v1.CatalogService", Method: "GetProduct", Retry: &DefaultRetry},
		{Service: "catalog.v1.CatalogService", Method: "CreateProduct"},
	}
	for _, lb := range []string{RoundRobin, LeastRequest, RingHash} {
		on := true
		cfg := Config{LoadBalancing: lb, HealthCheck: &on}
		if lb == RingHash {
			cfg.HashHeader = "x-user-id"
		}
		cfg = cfg.WithDefaults()
		if err := cfg.Validate("services.x"); err != nil {
			t.Fatal(err)
		}
		// grpc.NewClient parses the default service config and fails on one
		// it does not accept.
		c, err := Dial("passthrough:///127.0.0.1:1", "catalog", cfg, methods, resolver.Get("passthrough"), m, slog.Default(),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatalf("%s: %v", lb, err)
		}
		c.Close()
		sc, _ := serviceConfig(cfg, methods)
		var parsed struct {
			MethodConfig []struct {
				Name        []map[string]string
				RetryPolicy map[string]any
			}
		}
		if err := json.Unmarshal([]byte(sc), &parsed); err != nil {
			t.Fatal(err)
		}
		if len(parsed.MethodConfig) != 1 || parsed.MethodConfig[0].Name[0]["method"] != "GetProduct" {
			t.Errorf("%s: methodConfig = %+v, want GetProduct's retry only", lb, parsed.MethodConfig)
		}
		if !strings.Contains(sc, `"healthCheckConfig"`) {
			t.Errorf("%s: no healthCheckConfig in %s", lb, sc)
		}
	}
}

func TestBreakerRefusesOverTheLimit(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	cfg := Config{MaxConcurrentRequests: 2}.WithDefaults()
	c, err := Dial("passthrough:///127.0.0.1:1", "catalog", cfg, nil, resolver.Get("passthrough"), m, slog.Default(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r1, err1 := c.Acquire(t.Context())
	r2, err2 := c.Acquire(t.Context())
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	_, err = c.Acquire(t.Context())
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "max_concurrent_requests") {
		t.Fatalf("third call: %v, want UNAVAILABLE naming the limit", err)
	}
	r1()
	r3, err := c.Acquire(t.Context())
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	r2()
	r3()
	if c.InFlight() != 0 {
		t.Errorf("in flight = %d after every release", c.InFlight())
	}
}

func TestFailedCountsOnlyInstanceFailures(t *testing.T) {
	for code, want := range map[codes.Code]bool{
		codes.OK: false, codes.NotFound: false, codes.InvalidArgument: false, codes.PermissionDenied: false,
		codes.Canceled: false, codes.ResourceExhausted: false,
		codes.Unavailable: true, codes.DeadlineExceeded: true, codes.Internal: true, codes.Unknown: true,
	} {
		var err error
		if code != codes.OK {
			err = status.Error(code, "x")
		}
		if got := failed(err); got != want {
			t.Errorf("failed(%v) = %v, want %v", code, got, want)
		}
	}
}

func TestCodeName(t *testing.T) {
	for c, want := range map[codes.Code]string{codes.Unavailable: "UNAVAILABLE", codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.DataLoss: "DATA_LOSS"} {
		if got := codeName(c); got != want {
			t.Errorf("codeName(%v) = %q, want %q", c, got, want)
		}
	}
}

func TestServiceConfigDurations(t *testing.T) {
	for d, want := range map[time.Duration]string{50 * time.Millisecond: "0.05s", 50 * time.Microsecond: "0.00005s", 1500 * time.Millisecond: "1.5s", 123456789 * time.Nanosecond: "0.123456789s"} {
		if got := jsonDuration(d); got != want {
			t.Errorf("jsonDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func prometheusRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func gaugeValue(t *testing.T, m *Metrics, backend string) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.ejected.WithLabelValues(backend).Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetGauge().GetValue()
}
