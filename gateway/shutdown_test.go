package gateway_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/policy"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/orders"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// TestShutdownDrains: from the moment shutdown starts, /readyz fails, but a
// client sending steadily on new connections is not refused before the
// drain delay ends; streams still open when the grace ends are ended by
// the gateway with SHUTTING_DOWN, on both doors.
func TestShutdownDrains(t *testing.T) {
	const drain, grace = time.Second, 2500 * time.Millisecond
	w := newWorld(t, false, func(c *gateway.Config) { c.DrainDelay = drain })
	w.startCatalog()
	w.startOrders(orders.WithStatusStep(time.Hour)) // orders never move: the streams stay open
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o, err := w.ordersClient().CreateOrder(ctx, &ordersv1.CreateOrderRequest{Items: []*ordersv1.LineItem{{ProductId: "prd-000001", Quantity: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	id := o.GetOrder().GetId()
	var trailer metadata.MD
	stream, err := w.ordersClient().WatchOrder(ctx, &ordersv1.WatchOrderRequest{Id: id}, grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", w.base+"/v1/orders/"+id+":watch", nil)
	req.Header.Set("X-Api-Key", w.key)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()

	// A client on a new connection every 20ms; the first refusal is noted.
	start := time.Now()
	client := testutil.WatchRefusals(w.base+"/v1/products/prd-000001", 20*time.Millisecond)

	shutdownDone := make(chan error, 1)
	go func() {
		sctx, scancel := context.WithTimeout(context.Background(), grace)
		defer scancel()
		shutdownDone <- w.gw.Shutdown(sctx)
	}()
	testutil.Eventually(t, 500*time.Millisecond, "/readyz to fail at once", func() bool {
		code, _ := get(t, "http://"+w.gw.AdminAddr()+"/readyz", nil)
		return code == http.StatusServiceUnavailable
	})

	_, err = stream.Recv()
	got := grpcFailure(err, trailer)
	ended := time.Since(start)
	body, _ := io.ReadAll(resp.Body)
	<-shutdownDone
	refusedAt := client.Stop()
	t.Logf("drain %v, grace %v: first connection refused after %v; gRPC stream ended after %v with %v; REST stream's last line %q",
		drain, grace, refusedAt.Round(time.Millisecond), ended.Round(time.Millisecond), got, lastLine(body))
	if refusedAt != 0 && refusedAt < drain {
		t.Errorf("a connection was refused after %v, before the drain delay of %v ended", refusedAt, drain)
	}
	if got.reason != policy.ReasonShuttingDown || got.source != policy.SourceGateway || ended < grace-500*time.Millisecond {
		t.Errorf("gRPC stream: %v after %v, want UNAVAILABLE/SHUTTING_DOWN from the gateway at the end of the grace", got, ended)
	}
	if !strings.Contains(lastLine(body), policy.ReasonShuttingDown) {
		t.Errorf("REST stream: last line %q, want an error object with SHUTTING_DOWN", lastLine(body))
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
