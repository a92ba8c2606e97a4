package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portico-gw/portico/internal/testconsul"
	"github.com/portico-gw/portico/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(testconsul.Main(m)) }

// build compiles the binaries once for this test.
func build(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "../../cmd/gateway", "../../cmd/catalog", "../../cmd/orders")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	return dir
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

type proc struct {
	cmd  *exec.Cmd
	done chan error
}

func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return p
}

// stop sends SIGTERM and requires a clean exit within the grace period.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM, want status 0", filepath.Base(p.cmd.Path), err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("%s did not exit within 20s of SIGTERM", filepath.Base(p.cmd.Path))
	}
}

func instances(t *testing.T, consulAddr, service string) int {
	t.Helper()
	return len(passingIDs(t, consulAddr, service))
}

// startServices starts one catalog and one orders binary against the Consul
// agent at consulAddr, as make run does, and waits until both are healthy.
func startServices(t *testing.T, dir, consulAddr string) (catalog, orders *proc) {
	t.Helper()
	consul := "-consul-addr=" + consulAddr
	catalog = start(t, filepath.Join(dir, "catalog"), consul)
	orders = start(t, filepath.Join(dir, "orders"), consul, "-status-step=1h")
	testutil.Eventually(t, 30*time.Second, "catalog and orders healthy in Consul", func() bool {
		return instances(t, consulAddr, "catalog") == 1 && instances(t, consulAddr, "orders") == 1
	})
	return catalog, orders
}

func get(url string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// The binaries register with Consul, serve through the gateway, and on
// SIGTERM deregister and exit 0.
func TestBinariesEndToEnd(t *testing.T) {
	agent := testconsul.Shared(t)
	dir := build(t)
	consul := "-consul-addr=" + agent.Addr

	catalog, orders := startServices(t, dir, agent.Addr)

	httpAddr, grpcAddr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	// The operator's path: issue a key with the gateway binary, put its
	// hash in the config file.
	out, err := exec.Command(filepath.Join(dir, "gateway"), "-new-api-key", "e2e").Output()
	if err != nil {
		t.Fatalf("gateway -new-api-key: %v", err)
	}
	key, hash := issued(t, string(out))
	config := filepath.Join(t.TempDir(), "portico.yaml")
	if err := os.WriteFile(config, []byte("auth:\n  api_keys:\n    - consumer: e2e\n      sha256: "+hash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := start(t, filepath.Join(dir, "gateway"), "-config="+config, consul, "-http-addr="+httpAddr, "-grpc-addr="+grpcAddr, "-admin-addr="+adminAddr)
	testutil.Eventually(t, 30*time.Second, "gateway ready", func() bool {
		code, _, err := get("http://" + adminAddr + "/readyz")
		return err == nil && code == 200
	})

	code, body, err := get("http://" + httpAddr + "/v1/products/prd-000001")
	if err != nil || code != 200 {
		t.Fatalf("GET product through the gateway: %d %s %v", code, body, err)
	}
	var order struct {
		Order struct{ ID, Status string } `json:"order"`
	}
	anon, err := http.Post("http://"+httpAddr+"/v1/orders", "application/json",
		strings.NewReader(`{"items":[{"productId":"prd-000001","quantity":1}]}`))
	if err != nil {
		t.Fatal(err)
	}
	anon.Body.Close()
	if anon.StatusCode != http.StatusUnauthorized {
		t.Errorf("order without credentials: %d, want 401", anon.StatusCode)
	}
	req, _ := http.NewRequest("POST", "http://"+httpAddr+"/v1/orders",
		strings.NewReader(`{"items":[{"productId":"prd-000001","quantity":1}]}`))
	req.Header.Set("X-Api-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&order)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || order.Order.Status != "ORDER_STATUS_PENDING" {
		t.Fatalf("create order through the gateway: %d %+v %v", resp.StatusCode, order, err)
	}

	gw.stop(t)
	catalog.stop(t)
	orders.stop(t)
	if n := instances(t, agent.Addr, "catalog") + instances(t, agent.Addr, "orders"); n != 0 {
		t.Errorf("%d instances still registered after SIGTERM, want 0", n)
	}
	resp2, err := http.Get("http://" + agent.Addr + "/v1/agent/services")
	if err == nil {
		var svcs map[string]any
		_ = json.NewDecoder(resp2.Body).Decode(&svcs)
		resp2.Body.Close()
		if len(svcs) != 0 {
			t.Errorf("agent still lists services %v", keys(svcs))
		}
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// issued reads the key and its hash from `gateway -new-api-key` output.
func issued(t *testing.T, out string) (key, hash string) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "pk_"):
			key = line
		case strings.HasPrefix(line, "sha256: "):
			hash = strings.TrimPrefix(line, "sha256: ")
		}
	}
	if key == "" || len(hash) != 64 {
		t.Fatalf("cannot read key and hash from:\n%s", out)
	}
	return key, hash
}
