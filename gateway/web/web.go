package web

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/chain"
	"github.com/portico-gw/portico/gateway/clientip"
	"github.com/portico-gw/portico/gateway/edge"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/rest"
	"github.com/portico-gw/portico/gateway/route"
	"github.com/prometheus/client_golang/prometheus"
)

// SSEConfig is the config file's sse block.
type SSEConfig struct {
	// Heartbeat is how often an event stream gets a comment line while
	// it is open. Default 15s; negative: none.
	Heartbeat time.Duration `yaml:"heartbeat"`
}

// Options are what the web part is built from.
type Options struct {
	// CORS is the global cors block; nil: no CORS headers anywhere.
	CORS *policy.CORS
	// Services hold the per-service cors overrides, by full service name.
	Services map[string]route.ServiceConfig
	SSE      SSEConfig
	OpenAPI  OpenAPIConfig
	// Document is the OpenAPI 3 document of every service compiled in
	// (gen/openapi); nil: nothing to serve.
	Document []byte
	// Routes are the routed methods.
	Routes []*route.Route
	// GRPC is the gateway's grpc.Server, where gRPC-Web and Connect calls
	// go once transcoded; nil: neither protocol is served.
	GRPC http.Handler
	// Edge caps the deadlines of gRPC-Web and Connect calls as its tap
	// does native gRPC calls'.
	Edge *edge.Edge
	// Refusals account for gRPC-Web and Connect calls refused before the
	// chain (a body over the limit, text that is not base64), as the REST
	// door's Refusals do; Trusted finds their client's address.
	Refusals []chain.Refusals
	Trusted  clientip.Trusted
	// Logger logs what a refusal does not tell the client; nil: slog's
	// default.
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Web serves SSE, CORS, gRPC-Web, Connect and the OpenAPI document.
type Web struct {
	heartbeat time.Duration
	cors      *corsPolicy
	rpc       *rpc
	openapi   *document
}

// New builds the web part. It does no I/O.
func New(o Options) (*Web, error) {
	if o.SSE.Heartbeat == 0 {
		o.SSE.Heartbeat = DefaultHeartbeat
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	w := &Web{heartbeat: o.SSE.Heartbeat}
	var err error
	if w.cors, err = newCORS(o.CORS, o.Services, o.Routes, o.Registry); err != nil {
		return nil, err
	}
	if o.GRPC != nil {
		if w.rpc, err = newRPC(o); err != nil {
			return nil, fmt.Errorf("gRPC-Web and Connect: %w", err)
		}
	}
	if w.openapi, err = newDocument(o.OpenAPI, o.Document, o.Routes); err != nil {
		return nil, err
	}
	return w, nil
}

// MuxOptions are the REST door's additions to grpc-gateway's mux: the SSE
// marshaler.
func (w *Web) MuxOptions() []runtime.ServeMuxOption {
	return []runtime.ServeMuxOption{
		runtime.WithMarshalerOption(EventStream, &sseMarshaler{Marshaler: rest.Marshaler()}),
	}
}

// Handler wraps the REST door: CORS first (a preflight ends there), then
// gRPC-Web and Connect calls, the document and docs page, and SSE.
func (w *Web) Handler(door http.Handler) http.Handler {
	h := events(w.heartbeat, door)
	if w.openapi != nil {
		h = w.openapi.handler(h)
	}
	if w.rpc != nil {
		h = w.rpc.handler(h)
	}
	return w.cors.handler(h)
}
