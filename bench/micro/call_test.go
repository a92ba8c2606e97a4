package micro_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/bench/internal/backend"
	"github.com/portico-gw/portico/bench/internal/load"
	"github.com/portico-gw/portico/bench/internal/servers"
	"github.com/portico-gw/portico/discovery"
	"github.com/portico-gw/portico/internal/testconsul"
	"github.com/portico-gw/portico/services/host"
)

// paths is every server BenchmarkCall calls, in this process, started on
// first use and stopped by TestMain.
type paths struct {
	grpc map[string]*load.GRPCClient
	rest map[string]*load.RESTClient
	web  map[string]*load.WebClient // "connect/portico", "grpc-web/vanguard"
	stop []func()
}

var shared struct {
	once  sync.Once
	paths *paths
	err   error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if p := shared.paths; p != nil {
		for i := len(p.stop) - 1; i >= 0; i-- {
			p.stop[i]()
		}
	}
	os.Exit(code)
}

func startPaths(b *testing.B) *paths {
	shared.once.Do(func() { shared.paths, shared.err = newPaths() })
	if shared.err != nil {
		if !testconsul.Required() {
			b.Skip(shared.err)
		}
		b.Fatal(shared.err)
	}
	return shared.paths
}

func newPaths() (*paths, error) {
	p := &paths{grpc: map[string]*load.GRPCClient{}, rest: map[string]*load.RESTClient{}, web: map[string]*load.WebClient{}}
	fail := func(err error) (*paths, error) {
		for i := len(p.stop) - 1; i >= 0; i-- {
			p.stop[i]()
		}
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.stop = append(p.stop, cancel)
	bin, err := testconsul.Binary()
	if err != nil {
		return fail(err)
	}
	agent, err := testconsul.Start(bin)
	if err != nil {
		return fail(err)
	}
	p.stop = append(p.stop, agent.Stop)
	addr := agent.Addr
	client, err := discovery.NewConsulClient(discovery.ConsulConfig{Address: addr})
	if err != nil {
		return fail(err)
	}
	h, err := host.Start(ctx, host.Config{Name: servers.BackendName, Register: backend.Register, CheckInterval: time.Second}, client)
	if err != nil {
		return fail(err)
	}
	p.stop = append(p.stop, func() { _ = h.Stop(context.Background()) })
	if err := p.add("direct", h.Addr(), ""); err != nil {
		return fail(err)
	}
	for _, chain := range []bool{true, false} {
		gw, err := servers.NewPortico(addr, chain, io.Discard)
		if err != nil {
			return fail(err)
		}
		if err := gw.Start(ctx); err != nil {
			return fail(err)
		}
		p.stop = append(p.stop, func() { _ = gw.Shutdown(context.Background()) })
		if err := p.add(name(chain), gw.GRPCAddr(), "http://"+gw.HTTPAddr()); err != nil {
			return fail(err)
		}
		p.addWeb(name(chain), "http://"+gw.HTTPAddr())
	}
	mux, err := servers.NewGRPCGateway(ctx, h.Addr())
	if err != nil {
		return fail(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	p.stop = append(p.stop, func() { srv.Close() })
	if err := p.add("grpc-gateway", "", "http://"+l.Addr().String()); err != nil {
		return fail(err)
	}
	// vanguard alone in front of the backend: the peer of Portico's
	// gRPC-Web and Connect paths, which run vanguard and then the chain.
	vg, err := servers.NewVanguard(h.Addr())
	if err != nil {
		return fail(err)
	}
	vl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	vsrv := &http.Server{Handler: vg, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = vsrv.Serve(vl) }()
	p.stop = append(p.stop, func() { vsrv.Close() })
	p.addWeb("vanguard", "http://"+vl.Addr().String())
	return p, p.waitServing(ctx)
}

func name(chain bool) string {
	if chain {
		return "portico"
	}
	return "portico-nochain"
}

func (p *paths) add(name, grpcAddr, base string) error {
	if grpcAddr != "" {
		c, err := load.DialGRPC(grpcAddr, 1)
		if err != nil {
			return err
		}
		p.grpc[name] = c
		p.stop = append(p.stop, c.Close)
	}
	if base != "" {
		c := load.NewREST(base, 4)
		p.rest[name] = c
		p.stop = append(p.stop, c.Close)
	}
	return nil
}

func (p *paths) addWeb(name, base string) {
	for _, protocol := range []string{load.Connect, load.GRPCWeb} {
		c := load.NewWeb(base, protocol, 4)
		p.web[protocol+"/"+name] = c
		p.stop = append(p.stop, c.Close)
	}
}

// waitServing waits until Portico has found the backend in Consul.
func (p *paths) waitServing(ctx context.Context) error {
	get := load.Workloads()[0]
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range p.grpc {
		for {
			err := c.Call(get)(ctx, 0)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("never served: %w", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// BenchmarkCall is one request at a time end to end on loopback: the REST
// door (transcoding, the in-memory hop, the chain, the backend call),
// native gRPC pass-through, and the unary calls of Connect and gRPC-Web
// (vanguard's transcoding into the gateway's grpc.Server), each next to its
// baseline (vanguard alone in front of the backend for the last two).
func BenchmarkCall(b *testing.B) {
	p := startPaths(b)
	for _, w := range load.Workloads() {
		for _, path := range []string{"direct", "portico", "portico-nochain"} {
			bench(b, "grpc/"+w.Name+"/"+path, p.grpc[path].Call(w))
		}
		for _, path := range []string{"grpc-gateway", "portico", "portico-nochain"} {
			bench(b, "rest/"+w.Name+"/"+path, p.rest[path].Call(w))
		}
		if w.Name == "stream" {
			continue // unary calls only
		}
		for _, protocol := range []string{load.Connect, load.GRPCWeb} {
			for _, path := range []string{"vanguard", "portico", "portico-nochain"} {
				bench(b, protocol+"/"+w.Name+"/"+path, p.web[protocol+"/"+path].Call(w))
			}
		}
	}
}

func bench(b *testing.B, name string, call load.Call) {
	b.Run(name, func(b *testing.B) {
		ctx := context.Background()
		if err := call(ctx, 0); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := call(ctx, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}
