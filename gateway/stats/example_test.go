package stats_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/stats"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The gateway builds Stats from its route table, puts the interceptors on
// its chain right after the call facts, gives Observer to the Consul
// resolver, measures each backend call with StartBackendCall, and serves
// reg at /metrics.
func ExampleNew() {
	reg := prometheus.NewRegistry()
	// Drop what changes from run to run, to show the line's shape.
	stable := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey || a.Key == "latency" {
			return slog.Attr{}
		}
		return a
	}
	s, err := stats.New(reg, []stats.Route{{
		FullMethod: "/catalog.v1.CatalogService/GetProduct",
		Service:    "catalog.v1.CatalogService", Method: "GetProduct", Backend: "catalog",
	}}, stats.WithAccessLog(slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: stable}))))
	if err != nil {
		fmt.Println(err)
		return
	}

	// One REST call, as the chain hands it over.
	ctx := policy.NewContext(context.Background(), &policy.Call{
		FullMethod: "/catalog.v1.CatalogService/GetProduct", Service: "catalog.v1.CatalogService", Method: "GetProduct",
		Backend: "catalog", Transport: policy.REST, HTTPRoute: "GET /v1/products/{id}", ClientIP: "192.0.2.1",
	})
	_, _ = s.UnaryServerInterceptor()(ctx, wrapperspb.String("prd-000001"),
		&grpc.UnaryServerInfo{FullMethod: "/catalog.v1.CatalogService/GetProduct"},
		func(context.Context, any) (any, error) { return wrapperspb.String("Mug"), nil })

	families, _ := reg.Gather()
	for _, mf := range families {
		if mf.GetName() != "portico_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			fmt.Print(mf.GetName())
			for _, l := range m.GetLabel() {
				fmt.Printf(" %s=%q", l.GetName(), l.GetValue())
			}
			fmt.Println("", m.GetCounter().GetValue())
		}
	}
	// Output:
	// {"level":"INFO","msg":"call","transport":"rest","route":"GET /v1/products/{id}","method":"/catalog.v1.CatalogService/GetProduct","status":200,"code":"OK","client_ip":"192.0.2.1","bytes_in":12,"bytes_out":5,"backend":"catalog"}
	// portico_requests_total code="OK" method="GetProduct" service="catalog.v1.CatalogService" transport="rest" 1
}
