// Package consul runs the Consul dev agent the benchmark's Portico finds its
// backend through, on free loopback ports, with the flags the integration
// tests use (internal/testconsul, which this module cannot import).
package consul

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/portico-gw/portico/bench/internal/procs"
)

// Binary finds consul: $PORTICO_CONSUL_BIN, consul on PATH, then bin/consul
// in the repository above dir (what `make consul` builds).
func Binary(dir string) (string, error) {
	if p := os.Getenv("PORTICO_CONSUL_BIN"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p, nil
	}
	for d := dir; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "bin", "consul")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("no consul binary: run `make consul` or set PORTICO_CONSUL_BIN")
		}
	}
}

// Start runs `consul agent -dev` in dir and waits for a leader. The agent
// is a child of the benchmark and dies with it.
func Start(ctx context.Context, bin, dir string) (*procs.Process, string, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	p, err := procs.Start(bin, filepath.Join(dir, "consul.log"),
		"agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1", "-node=portico-bench",
		"-http-port="+strconv.Itoa(ports[0]),
		"-serf-lan-port="+strconv.Itoa(ports[1]),
		"-serf-wan-port="+strconv.Itoa(ports[2]),
		"-server-port="+strconv.Itoa(ports[3]),
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1", "-https-port=-1",
		"-log-level=warn", "-data-dir="+filepath.Join(dir, "consul-data"))
	if err != nil {
		return nil, "", err
	}
	client, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		p.Stop()
		return nil, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		leader, err := client.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
		if err == nil && leader != "" {
			return p, addr, nil
		}
		select {
		case <-ctx.Done():
			p.Stop()
			return nil, "", fmt.Errorf("consul at %s had no leader: %w\n%s", addr, ctx.Err(), p.Output())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
