package servers

import (
	"context"
	"fmt"
	"strings"

	"github.com/portico-gw/portico/bench/internal/procs"
	"github.com/portico-gw/portico/gateway"
)

// WithBackend routes both example services to the Consul service name
// instead of BackendName: the faulty workload's Portico calls its own
// instances, one of them faulty.
func WithBackend(name string) Option {
	return func(c *gateway.Config) {
		for k, s := range c.Services {
			s.Backend = name
			c.Services[k] = s
		}
	}
}

// NginxFailover is nginx grpc_pass to a static upstream of backends, set
// up for failover the way an operator would: passive health checks on
// every server (max_fails, fail_timeout) and up to three tries of a call.
//
// nginx decides both from what it sees of HTTP, and a gRPC error is not
// HTTP's: a backend answering UNAVAILABLE sends HTTP status 200 with
// grpc-status 14 in its trailers (or a trailers-only response), so none of
// grpc_next_upstream's conditions holds (http_503 means an HTTP 503), no
// try goes to the next server, and max_fails counts nothing. What nginx
// does retry is a connection that fails (error, timeout) before the
// request was sent: a gRPC call is a POST, which nginx never sends twice
// unless non_idempotent is set, and setting it would also repeat calls
// that are not safe to repeat (CreateProduct), so it is not.
func NginxFailover(ctx context.Context, dir string, backends []string) (*procs.Process, string, string, error) {
	np := nginxFailover
	np.Backends = backends
	return startNginx(ctx, dir, np)
}

var nginxFailover = nginxParams{
	ServerParams: " max_fails=3 fail_timeout=10s",
	Directives: []string{
		"grpc_next_upstream error timeout http_502 http_503 http_504",
		"grpc_next_upstream_tries 3",
		"grpc_connect_timeout 1s",
	},
}

// NginxFailoverDescription says how NginxFailover is configured, for the
// report.
func NginxFailoverDescription() string {
	return fmt.Sprintf("a static upstream of the three instances (round robin), each `%s`; `%s;`. "+
		"A gRPC UNAVAILABLE comes as HTTP 200 with grpc-status 14, which none of those conditions matches: "+
		"nginx retries, and counts towards max_fails, only connection failures and HTTP error statuses, not gRPC statuses.",
		strings.TrimSpace(nginxFailover.ServerParams), strings.Join(nginxFailover.Directives, "; "))
}
