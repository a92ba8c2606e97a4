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
	"strings"
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

	bin   string
	ports []int // HTTP, Serf LAN, Serf WAN, server RPC; kept across Restart
	out   *syncBuffer

	mu  sync.Mutex
	run *process // nil once stopped
}

// process is one run of the agent binary.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited and its data dir is gone
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
// A port found free can be taken by another process (a parallel test
// package) before consul binds it: then it starts again on new ports, a
// few times.
func Start(bin string) (*Agent, error) {
	const attempts = 5
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(4)
		if err != nil {
			return nil, err
		}
		a := &Agent{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])), bin: bin, ports: ports, out: &syncBuffer{}}
		err = a.start()
		if err == nil {
			return a, nil
		}
		if attempt == attempts || !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
	}
}

// Restart kills the agent, if it runs, and starts a new one on the same
// ports with an empty data dir: an agent that lost every registration and
// KV pair, as after a crash of a dev agent or a rebuilt node. It waits
// until the new agent has a leader. Clients made by Client keep working.
// Restart a private agent (New), never the Shared one.
func (a *Agent) Restart(tb testing.TB) {
	tb.Helper()
	a.Stop()
	fmt.Fprintf(a.out, "--- testconsul: restarted on %s ---\n", a.Addr)
	if err := a.start(); err != nil {
		tb.Fatalf("restart consul: %v", err)
	}
}

// start runs the binary on a.ports with a fresh data dir.
func (a *Agent) start() error {
	dataDir, err := os.MkdirTemp("", "portico-consul-")
	if err != nil {
		return err
	}
	args := []string{
		"agent", "-dev",
		"-bind=127.0.0.1", "-client=127.0.0.1",
		"-node=portico-test",
		"-http-port=" + strconv.Itoa(a.ports[0]),
		"-serf-lan-port=" + strconv.Itoa(a.ports[1]),
		"-serf-wan-port=" + strconv.Itoa(a.ports[2]),
		"-server-port=" + strconv.Itoa(a.ports[3]),
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1", "-https-port=-1",
		"-log-level=warn",
		"-data-dir=" + dataDir,
	}
	cmd := exec.Command(a.bin, args...)
	cmd.Stdout, cmd.Stderr = a.out, a.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dataDir)
		return fmt.Errorf("consul: %w", err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		os.RemoveAll(dataDir)
		close(p.done)
	}()
	a.mu.Lock()
	a.run = p
	a.mu.Unlock()
	if err := a.waitLeader(p, 30*time.Second); err != nil {
		a.Stop()
		return fmt.Errorf("%w\nconsul output:\n%s", err, a.out.String())
	}
	return nil
}

func (a *Agent) waitLeader(p *process, timeout time.Duration) error {
	client, err := api.NewClient(&api.Config{Address: a.Addr})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
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

// Stop kills the agent and waits for it to exit. It is safe to call twice;
// Restart starts it again.
func (a *Agent) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.run
	if p == nil {
		return
	}
	a.run = nil
	select {
	case <-p.done: // exited on its own: its process group may be reused
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
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
