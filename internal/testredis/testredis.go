// Package testredis starts real Redis servers (Debian's redis-server) for
// tests, on free loopback ports, without persistence.
//
// Under plain `go test` a missing redis-server skips the tests that need
// one. `make test` sets PORTICO_REQUIRE_REDIS=1, which turns that skip into
// a failure, so CI can never pass on skipped Redis tests; .ci/run installs
// the package when it is missing.
package testredis

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is a running redis-server. Stop and Start stop and start it again
// on the same port, with empty data: a Redis that crashed and came back.
type Server struct {
	// Addr is host:port.
	Addr string

	bin  string
	port int
	opts Options
	out  *syncBuffer

	mu  sync.Mutex
	run *process // nil while stopped
}

// Options are extra settings for the server.
type Options struct {
	// Args are passed to redis-server after the defaults (port, bind,
	// no persistence), e.g. "--user", "alice on >secret ~portico:* +@all".
	Args []string
	// TLS, when set, serves TLS only on the port (the Args must name the
	// server's --tls-cert-file, --tls-key-file and --tls-ca-cert-file), and
	// is the client config the readiness PING uses.
	TLS *tls.Config
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
}

// Required reports whether a missing redis-server must fail the test run.
func Required() bool { return os.Getenv("PORTICO_REQUIRE_REDIS") == "1" }

// Binary finds redis-server: $PORTICO_REDIS_BIN, else redis-server on PATH.
func Binary() (string, error) {
	if p := os.Getenv("PORTICO_REDIS_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("PORTICO_REDIS_BIN=%s: %w", p, err)
		}
		return p, nil
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New("no redis-server: install Debian's redis-server package (.ci/run does) or set PORTICO_REDIS_BIN")
	}
	return p, nil
}

// New starts a Redis that is stopped when the test ends. It skips the test
// when there is no redis-server, unless Required.
func New(tb testing.TB) *Server { return NewWith(tb, Options{}) }

// NewWith is New with options.
func NewWith(tb testing.TB, opts Options) *Server {
	tb.Helper()
	return newWithPort(tb, opts, freePort)
}

func newWithPort(tb testing.TB, opts Options, freePort func() (int, error)) *Server {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		if Required() {
			tb.Fatalf("redis-server is required (PORTICO_REQUIRE_REDIS=1): %v", err)
		}
		tb.Skipf("skipping test that needs Redis: %v", err)
	}
	s := &Server{bin: bin, opts: opts, out: &syncBuffer{}}
	// A free port can be taken between our probe and Redis binding it:
	// try a few.
	for attempt := 0; ; attempt++ {
		s.port, err = freePort()
		if err == nil {
			s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
			err = s.start()
		}
		if err == nil {
			break
		}
		if attempt == 4 {
			tb.Fatalf("start redis-server: %v", err)
		}
	}
	tb.Cleanup(s.Stop)
	return s
}

// Start starts a stopped server again on its port, with empty data, and
// waits until it answers.
func (s *Server) Start(tb testing.TB) {
	tb.Helper()
	fmt.Fprintf(s.out, "--- testredis: started again on %s ---\n", s.Addr)
	if err := s.start(); err != nil {
		tb.Fatalf("restart redis-server: %v", err)
	}
}

func (s *Server) start() error {
	dir, err := os.MkdirTemp("", "portico-redis-")
	if err != nil {
		return err
	}
	port := []string{"--port", strconv.Itoa(s.port)}
	if s.opts.TLS != nil {
		port = []string{"--port", "0", "--tls-port", strconv.Itoa(s.port)}
	}
	args := append(port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no")
	cmd := exec.Command(s.bin, append(args, s.opts.Args...)...)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("redis-server: %w", err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		os.RemoveAll(dir)
		close(p.done)
	}()
	s.mu.Lock()
	s.run = p
	s.mu.Unlock()
	if err := s.waitPing(p, 20*time.Second); err != nil {
		s.Stop()
		return fmt.Errorf("%w\nredis-server output:\n%s", err, s.out.String())
	}
	return nil
}

// waitPing waits until the server answers PING (PONG, or NOAUTH when the
// default user is off).
func (s *Server) waitPing(p *process, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return errors.New("redis-server exited during start")
		default:
		}
		if reply, err := s.ping(); err == nil && (reply == "+PONG" || strings.HasPrefix(reply, "-NOAUTH")) {
			return nil
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
	return fmt.Errorf("redis-server at %s did not answer PING within %v", s.Addr, timeout)
}

func (s *Server) ping() (string, error) { return s.command("PING") }

// command sends one inline command and reads the reply: a status or error
// line, or the body of a bulk string.
func (s *Server) command(cmd string) (string, error) {
	d := &net.Dialer{Timeout: time.Second}
	var conn net.Conn
	var err error
	if s.opts.TLS != nil {
		conn, err = tls.DialWithDialer(d, "tcp", s.Addr, s.opts.TLS)
	} else {
		conn, err = d.Dial("tcp", s.Addr)
	}
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte(cmd + "\r\n")); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "$") {
		return strings.TrimSpace(line), err
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 0 {
		return "", fmt.Errorf("bad bulk reply %q", line)
	}
	body := make([]byte, n+2)
	_, err = io.ReadFull(r, body)
	return string(body[:n]), err
}

// NewCluster starts a Redis Cluster of n primaries (no replicas), each a
// Server on a free port whose cluster bus port (port+10000) is free too,
// joins them with redis-cli --cluster create, and waits until every node
// reports cluster_state:ok. Stopped when the test ends.
func NewCluster(tb testing.TB, n int) []*Server {
	tb.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		if Required() {
			tb.Fatalf("redis-cli is required (PORTICO_REQUIRE_REDIS=1): %v", err)
		}
		tb.Skipf("skipping test that needs a Redis Cluster: %v", err)
	}
	var nodes []*Server
	var addrs []string
	for range n {
		s := newWithPort(tb, Options{Args: []string{"--cluster-enabled", "yes", "--cluster-node-timeout", "5000"}}, freeClusterPort)
		nodes = append(nodes, s)
		addrs = append(addrs, s.Addr)
	}
	out, err := exec.Command(cli, append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range nodes {
		for {
			reply, err := s.command("CLUSTER INFO")
			if err == nil && strings.Contains(reply, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("redis cluster at %s not ok after 30s: %q %v", s.Addr, reply, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nodes
}

// Stop kills the server and waits for it to exit. Safe to call twice.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.run
	if p == nil {
		return
	}
	s.run = nil
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// Output is what the server printed so far, for failure messages.
func (s *Server) Output() string { return s.out.String() }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freeClusterPort is a free port below 55536 whose cluster bus port
// (port+10000) is free as well.
func freeClusterPort() (int, error) {
	for range 100 {
		p, err := freePort()
		if err != nil {
			return 0, err
		}
		if p+10000 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		if err != nil {
			continue
		}
		l.Close()
		return p, nil
	}
	return 0, errors.New("no free port pair for a cluster node")
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
