package gateway_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/policy"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// slowCatalog reports the deadline GetProduct was given and answers only
// well after it, so the deadline is always the gateway's to enforce.
type slowCatalog struct {
	catalogv1.UnimplementedCatalogServiceServer
	seen chan time.Duration
}

func (s *slowCatalog) GetProduct(ctx context.Context, _ *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	left := time.Duration(-1)
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	s.seen <- left
	wait := time.Second
	if left > 0 {
		wait += left
	}
	// A slow backend: it answers a second after the call's deadline, so
	// the gateway's deadline fires first (no event would show that sooner).
	time.Sleep(wait)
	return nil, status.Error(codes.Internal, "answered too late to be seen")
}

func TestDeadlines(t *testing.T) {
	w := newWorld(t, false, func(c *gateway.Config) {
		c.Services["catalog.v1.CatalogService"] = gateway.ServiceConfig{Backend: c.Services["catalog.v1.CatalogService"].Backend, Timeout: 300 * time.Millisecond}
	})
	slow := &slowCatalog{seen: make(chan time.Duration, 10)}
	w.startHost(w.catalog, func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, slow) })

	t.Run("service default applies and reaches the backend", func(t *testing.T) {
		r := w.rest("GET", "/v1/products/prd-000001", nil)
		if r.Status != http.StatusGatewayTimeout || r.Header.Get("X-Portico-Error-Source") != "gateway" {
			t.Fatalf("got %d (%s) %s, want 504 from the gateway", r.Status, r.Header.Get("X-Portico-Error-Source"), r.Raw)
		}
		if reason, _ := errorInfo(r.Body); reason != policy.ReasonDeadline {
			t.Errorf("reason = %q, want %s", reason, policy.ReasonDeadline)
		}
		if left := <-slow.seen; left <= 0 || left > 300*time.Millisecond {
			t.Errorf("backend saw deadline %v, want within (0, 300ms]", left)
		}
	})

	t.Run("a caller without a deadline gets the timeout, not the maximum, on both doors", func(t *testing.T) {
		w3 := newWorld(t, false, func(c *gateway.Config) {
			c.Services["catalog.v1.CatalogService"] = gateway.ServiceConfig{Backend: w.catalog, Timeout: 300 * time.Millisecond, MaxTimeout: time.Minute}
		})
		r := w3.rest("GET", "/v1/products/prd-000001", nil)
		if r.Status != http.StatusGatewayTimeout {
			t.Fatalf("REST: got %d %s, want 504 after the 300ms timeout", r.Status, r.Raw)
		}
		if left := <-slow.seen; left <= 0 || left > 300*time.Millisecond {
			t.Errorf("REST: backend saw deadline %v, want within (0, 300ms]: the timeout, not max_timeout's minute", left)
		}
		_, err := w3.catalogClient().GetProduct(context.Background(), &catalogv1.GetProductRequest{Id: "prd-000001"})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("gRPC: got %v, want DEADLINE_EXCEEDED", err)
		}
		if left := <-slow.seen; left <= 0 || left > 300*time.Millisecond {
			t.Errorf("gRPC: backend saw deadline %v, want within (0, 300ms]", left)
		}
	})

	t.Run("grpc-timeout from the client is honoured", func(t *testing.T) {
		w2 := newWorld(t, false, func(c *gateway.Config) {
			c.Services["catalog.v1.CatalogService"] = gateway.ServiceConfig{Backend: w.catalog, Timeout: time.Minute}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := w2.catalogClient().GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("got %v, want DEADLINE_EXCEEDED", err)
		}
		if left := <-slow.seen; left <= 0 || left > 200*time.Millisecond {
			t.Errorf("backend saw deadline %v, want within (0, 200ms]: the client's, not the service's minute", left)
		}
	})
}
