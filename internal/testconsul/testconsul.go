// Package testconsul starts real Consul dev agents for tests, on free
// loopback ports.
//
// Under plain `go test` a missing consul binary skips the tests that need
// one. `make test` sets PORTICO_REQUIRE_CONSUL=1, which turns that skip into a
// failure so CI can never pass on skipped integration tests.
package testconsul

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Agent is a running `consul agent -dev`.
type Agent struct {
	// Addr is the HTTP API address, host:port.
	Addr string

	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	once sync.Once
}

// Required reports whether a missing Consul must fail the test run.
func Required() bool { return os.Getenv("PORTICO_REQUIRE_CONSUL") == "1" }

// Binary finds the consul binary: $PORTICO_CONSUL_BIN, then consul on PATH,
// then bin/consul at the repository root (what `make consul` builds).
func Binary() (string, error) {
	if p := os.Getenv("PORTICO_CONSUL_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("PORTICO_CONSUL_BIN=%s: %w", p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "bin", "consul")
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no consul binary: run `make consul` or set PORTICO_CONSUL_BIN")
		}
		dir = parent
	}
}

// New starts a private agent that is stopped when the test ends. It skips
// the test when no consul binary exists, unless Required.
func New(tb testing.TB) *Agent {
	tb.Helper()
	a := startOrSkip(tb)
	tb.Cleanup(a.Stop)
	return a
}

// startOrSkip starts an agent, or skips (fails, if Required) the test when
// there is no consul binary.
func startOrSkip(tb testing.TB) *Agent {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		if Required() {
			tb.Fatalf("consul is required (PORTICO_REQUIRE_CONSUL=1): %v", err)
		}
		tb.Skipf("skipping integration test: %v", err)
	}
	a, err := Start(bin)
	if err != nil {
		tb.Fatalf("start consul: %v", err)
	}
	return a
}

var shared struct {
	sync.Mutex
	agent *Agent
}

// Shared returns one agent for the whole test binary, started on first use.
// Call Main from TestMain so it is stopped at the end.
func Shared(tb testing.TB) *Agent {
	tb.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.agent != nil {
		return shared.agent
	}
	shared.agent = startOrSkip(tb)
	return shared.agent
}

// Main runs the tests and stops the shared agent, if one was started.
func Main(m *testing.M) int {
	code := m.Run()
	shared.Lock()
	if shared.agent != nil {
		shared.agent.Stop()
	}
	shared.Unlock()
	return code
}

// Start runs `consul agent -dev` from bin on free loopback ports and waits
// until it has a leader.
func Start(bin string) (*Agent, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	dataDir, err := os.MkdirTemp("", "portico-consul-")
	if err != nil {
		return nil, err
	}
	args := []string{
		"agent", "-dev",
		"-bind=127.0.0.1", "-client=127.0.0.1",
		"-node=portico-test",
		"-http-port=" + strconv.Itoa(ports[0]),
		"-serf-lan-port=" + strconv.Itoa(ports[1]),
		"-serf-wan-port=" + strconv.Itoa(ports[2]),
		"-server-port=" + strconv.Itoa(ports[3]),
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1", "-https-port=-1",
		"-log-level=warn",
		"-data-dir=" + dataDir,
	}
	out := &syncBuffer{}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dataDir)
		return nil, fmt.Errorf("consul: %w", err)
	}
	a := &Agent{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])), cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		os.RemoveAll(dataDir)
		close(a.done)
	}()
	if err := a.waitLeader(30 * time.Second); err != nil {
		a.Stop()
		return nil, fmt.Errorf("%w\nconsul output:\n%s", err, out.String())
	}
	return a, nil
}

func (a *Agent) waitLeader(timeout time.Duration) error {
	client, err := api.NewClient(&api.Config{Address: a.Addr})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-a.done:
			return errors.New("consul exited during start")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		leader, err := client.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
		cancel()
		if err == nil && leader != "" {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("consul at %s had no leader after %v", a.Addr, timeout)
}

// Client returns an API client for the agent.
func (a *Agent) Client(tb testing.TB) *api.Client {
	tb.Helper()
	c, err := api.NewClient(&api.Config{Address: a.Addr})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// Stop kills the agent and waits for it to exit. It is safe to call twice.
func (a *Agent) Stop() {
	a.once.Do(func() {
		if a.cmd.Process != nil {
			_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		}
		select {
		case <-a.done:
		case <-time.After(10 * time.Second):
		}
	})
}

// Output is what the agent printed so far, for failure messages.
func (a *Agent) Output() string { return a.out.String() }

func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
