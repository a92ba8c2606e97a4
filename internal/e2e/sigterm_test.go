package e2e

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"github.com/portico-gw/portico/internal/testconsul"
	"github.com/portico-gw/portico/internal/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestSIGTERMDrains sends the gateway binary SIGTERM while a client keeps
// sending on new connections and two streams are open: /readyz fails at
// once, nobody is refused before the drain delay ends, and the streams
// still open at the end of the grace end with SHUTTING_DOWN.
func TestSIGTERMDrains(t *testing.T) {
	const drain, grace = time.Second, 3 * time.Second
	agent := testconsul.Shared(t)
	dir := build(t)
	catalog, orders := startServices(t, dir, agent.Addr)
	defer catalog.stop(t)
	defer orders.stop(t)

	out, err := exec.Command(filepath.Join(dir, "gateway"), "-new-api-key", "e2e").Output()
	if err != nil {
		t.Fatalf("gateway -new-api-key: %v", err)
	}
	key, hash := issued(t, string(out))
	config := filepath.Join(t.TempDir(), "portico.yaml")
	if err := os.WriteFile(config, []byte("drain_delay: 1s\nshutdown_grace: 3s\nauth:\n  api_keys:\n    - consumer: e2e\n      sha256: "+hash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	httpAddr, grpcAddr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	gw := start(t, filepath.Join(dir, "gateway"), "-config="+config, "-consul-addr="+agent.Addr,
		"-http-addr="+httpAddr, "-grpc-addr="+grpcAddr, "-admin-addr="+adminAddr)
	testutil.Eventually(t, 30*time.Second, "gateway ready", func() bool {
		code, _, err := get("http://" + adminAddr + "/readyz")
		return err == nil && code == 200
	})

	// An order that never moves (the orders binary runs with -status-step=1h),
	// watched over gRPC and over REST.
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(t.Context(), "x-api-key", key)
	oc := ordersv1.NewOrderServiceClient(conn)
	o, err := oc.CreateOrder(ctx, &ordersv1.CreateOrderRequest{Items: []*ordersv1.LineItem{{ProductId: "prd-000001", Quantity: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	var trailer metadata.MD
	stream, err := oc.WatchOrder(ctx, &ordersv1.WatchOrderRequest{Id: o.GetOrder().GetId()}, grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+httpAddr+"/v1/orders/"+o.GetOrder().GetId()+":watch", nil)
	req.Header.Set("X-Api-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	if !lines.Scan() {
		t.Fatal("the REST stream sent nothing")
	}

	start := time.Now()
	client := testutil.WatchRefusals("http://"+httpAddr+"/v1/products/prd-000001", 20*time.Millisecond)
	if err := gw.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "/readyz to fail at once", func() bool {
		code, _, err := get("http://" + adminAddr + "/readyz")
		return err != nil || code == http.StatusServiceUnavailable
	})

	_, err = stream.Recv()
	ended := time.Since(start)
	var last string
	for lines.Scan() {
		last = lines.Text()
	}
	select {
	case err := <-gw.done:
		if err != nil {
			t.Errorf("gateway exited with %v, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("gateway did not exit")
	}
	refusedAt := client.Stop()
	t.Logf("SIGTERM with drain %v, grace %v: first refusal after %v; gRPC stream ended after %v: %v; REST stream's last line: %s",
		drain, grace, refusedAt.Round(time.Millisecond), ended.Round(time.Millisecond), err, last)
	if refusedAt != 0 && refusedAt < drain {
		t.Errorf("a connection was refused after %v, before the drain delay of %v", refusedAt, drain)
	}
	if status.Code(err) != codes.Unavailable || reason(err) != "SHUTTING_DOWN" {
		t.Errorf("gRPC stream ended with %v, want UNAVAILABLE/SHUTTING_DOWN", err)
	}
	var final struct { // a google.rpc.Status, as unary errors
		Details []struct{ Reason string } `json:"details"`
	}
	if json.Unmarshal([]byte(last), &final) != nil || len(final.Details) == 0 || final.Details[0].Reason != "SHUTTING_DOWN" {
		t.Errorf("REST stream's last line %q, want a google.rpc.Status with SHUTTING_DOWN", last)
	}
}

func reason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}
