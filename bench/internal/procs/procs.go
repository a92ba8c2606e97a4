// Package procs runs the benchmark's servers as child processes and reads
// what each costs: CPU time and resident memory from /proc (for any
// process, nginx included) and heap allocations from the runtime/metrics
// that every Go child serves on its debug listener.
package procs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a running child. It is in a process group of its own and is
// killed if the benchmark dies.
type Process struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// Start runs bin with args; stdout and stderr go to logPath.
func Start(bin, logPath string, args ...string) (*Process, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", filepath.Base(bin), err)
	}
	p := &Process{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the child's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the child has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the child's group, then SIGKILL after 5s.
func (p *Process) Stop() {
	pg := -p.cmd.Process.Pid
	_ = syscall.Kill(pg, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(pg, syscall.SIGKILL)
		<-p.done
	}
}

// Output is the end of what the child printed, for error messages.
func (p *Process) Output() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Usage is what a process tree has used so far.
type Usage struct {
	CPU time.Duration // user + system, of the process and its children
	RSS int64         // bytes resident now, summed over the tree
}

// clockTick is USER_HZ, 100 on every Linux the benchmark runs on.
const clockTick = 10 * time.Millisecond

// ReadUsage reads /proc for pid and its direct children (nginx's workers).
func ReadUsage(pid int) (Usage, error) {
	var u Usage
	pids := append([]int{pid}, children(pid)...)
	for i, id := range pids {
		cpu, err := cpuOf(id)
		if err != nil {
			if i == 0 {
				return u, err
			}
			continue // a worker that just exited
		}
		u.CPU += cpu
		u.RSS += rssOf(id)
	}
	return u, nil
}

func cpuOf(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields count from after its ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * clockTick, nil
}

func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func children(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if id, err := strconv.Atoi(f); err == nil {
			out = append(out, id)
		}
	}
	return out
}

// Ready is what a Go child reports once it serves.
type Ready struct {
	HTTP  string `json:"http,omitempty"`  // REST listener, host:port
	GRPC  string `json:"grpc,omitempty"`  // gRPC listener, host:port
	Debug string `json:"debug,omitempty"` // pprof and runtime metrics
}

// WriteReady publishes r at path, atomically.
func WriteReady(path string, r Ready) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// WaitReady waits until p has written its Ready to path.
func WaitReady(ctx context.Context, p *Process, path string) (Ready, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		var r Ready
		if b, err := os.ReadFile(path); err == nil {
			return r, json.Unmarshal(b, &r)
		}
		if p.Exited() {
			return r, fmt.Errorf("exited before it was ready:\n%s", p.Output())
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("not ready: %w\n%s", ctx.Err(), p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ServeDebug serves pprof and /debug/allocs on a free loopback port, in the
// child, and returns its address.
func ServeDebug() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/allocs", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(readAllocs())
	})
	go func() { _ = http.Serve(l, mux) }()
	return l.Addr().String(), nil
}

// Allocs counts heap allocations since the process started.
type Allocs struct {
	Objects uint64 `json:"objects"` // tiny allocations included, as in testing's allocs/op
	Bytes   uint64 `json:"bytes"`
}

func readAllocs() Allocs {
	s := []metrics.Sample{
		{Name: "/gc/heap/allocs:objects"},
		{Name: "/gc/heap/tiny/allocs:objects"},
		{Name: "/gc/heap/allocs:bytes"},
	}
	metrics.Read(s)
	return Allocs{Objects: s[0].Value.Uint64() + s[1].Value.Uint64(), Bytes: s[2].Value.Uint64()}
}

// ReadAllocs asks a Go child's debug listener for its allocation counts.
func ReadAllocs(ctx context.Context, debugAddr string) (Allocs, error) {
	var a Allocs
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+debugAddr+"/debug/allocs", nil)
	if err != nil {
		return a, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return a, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return a, errors.New(resp.Status)
	}
	return a, json.NewDecoder(resp.Body).Decode(&a)
}
