package servers

import (
	"context"
	"net/http"
	"net/http/httputil"
	"net/url"

	"connectrpc.com/vanguard"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
)

// Vanguard is the second REST peer: connectrpc.com/vanguard transcoding
// REST to gRPC and forwarding it, through a reverse proxy over h2c, to the
// backend. Vanguard serves server streams over REST only for
// google.api.HttpBody responses, so the stream workload has no REST figure
// for it.
func Vanguard(ctx context.Context, backendAddr, readyPath string) error {
	tc, err := NewVanguard(backendAddr)
	if err != nil {
		return err
	}
	return serveREST(ctx, tc, nil, readyPath)
}

// NewVanguard is vanguard in front of the backend: REST, Connect and
// gRPC-Web transcoded to gRPC and forwarded over h2c, with no chain.
func NewVanguard(backendAddr string) (http.Handler, error) {
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: backendAddr})
	t := &http.Transport{Protocols: new(http.Protocols), MaxIdleConnsPerHost: 8}
	t.Protocols.SetUnencryptedHTTP2(true)
	proxy.Transport = t
	var services []*vanguard.Service
	for _, name := range []string{catalogv1.CatalogService_ServiceDesc.ServiceName, ordersv1.OrderService_ServiceDesc.ServiceName} {
		services = append(services, vanguard.NewService(name, proxy,
			vanguard.WithTargetProtocols(vanguard.ProtocolGRPC), vanguard.WithTargetCodecs(vanguard.CodecProto)))
	}
	return vanguard.NewTranscoder(services)
}
