package rest_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/portico-gw/portico/gateway/chain"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/rest"
	"github.com/portico-gw/portico/gateway/route"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// refusals records what the door reports as refused before the chain.
type refusals struct {
	mu   sync.Mutex
	got  []string // "route method code http"
	last *policy.Call
}

func (r *refusals) Refused(_ context.Context, c *policy.Call, err error, httpStatus int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, c.HTTPRoute+" "+c.FullMethod+" "+status.Code(err).String()+" "+http.StatusText(httpStatus))
	r.last = c
}

var _ chain.Refusals = (*refusals)(nil)

// door serves the catalog's REST routes; every unary call runs chain, which
// stands in for the bound interceptor chain and the proxy.
func door(t *testing.T, bound grpc.UnaryHandler) (*httptest.Server, *refusals) {
	t.Helper()
	ref := &refusals{}
	d := rest.CatalogDoor(t, func(r *route.Route) *proxy.Method {
		m := proxy.New(r, nil, proxy.AsBytes)
		m.Bind(func(grpc.UnaryHandler) grpc.UnaryHandler { return bound })
		return m
	}, func(c *rest.Config, _ *route.Table) { c.Refusals = []chain.Refusals{ref} })
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	return srv, ref
}

type reply struct {
	status int
	source string
	code   codes.Code
	reason string
	header http.Header
}

func do(t *testing.T, srv *httptest.Server, method, path, body string) reply {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Code    codes.Code
		Details []struct {
			Type   string `json:"@type"`
			Reason string
		}
	}
	_ = json.NewDecoder(resp.Body).Decode(&st)
	r := reply{status: resp.StatusCode, source: resp.Header.Get("X-Portico-Error-Source"), code: st.Code, header: resp.Header}
	for _, d := range st.Details {
		if strings.HasSuffix(d.Type, "ErrorInfo") {
			r.reason = d.Reason
		}
	}
	return r
}

func TestRefusedBeforeTheChain(t *testing.T) {
	ran := false
	srv, ref := door(t, func(context.Context, any) (any, error) { ran = true; return nil, nil })
	for _, tc := range []struct {
		method, path, body string
		want               reply
		refused            string
	}{
		{"GET", "/v1/nope/x", "", reply{status: 404, code: codes.NotFound, reason: policy.ReasonNoRoute, source: "gateway"}, "unmatched  NotFound Not Found"},
		{"PUT", "/v1/products/x", "{}", reply{status: 405, code: codes.Unimplemented, reason: policy.ReasonNoRoute, source: "gateway"}, "unmatched  Unimplemented Method Not Allowed"},
		{"POST", "/v1/products", `{"sku": `, reply{status: 400, code: codes.InvalidArgument, reason: policy.ReasonBadRequest, source: "gateway"},
			"POST /v1/products /catalog.v1.CatalogService/CreateProduct InvalidArgument Bad Request"},
		{"POST", "/v1/products", `{"name": "` + strings.Repeat("x", rest.MaxBodyBytes) + `"}`,
			reply{status: 413, code: codes.ResourceExhausted, reason: policy.ReasonBadRequest, source: "gateway"}, "unmatched  ResourceExhausted Request Entity Too Large"},
	} {
		got := do(t, srv, tc.method, tc.path, tc.body)
		if got.status != tc.want.status || got.code != tc.want.code || got.reason != tc.want.reason || got.source != tc.want.source {
			t.Errorf("%s %s: %+v, want %+v", tc.method, tc.path, got, tc.want)
		}
		if n := len(ref.got); n == 0 || ref.got[n-1] != tc.refused {
			t.Errorf("%s %s: refusals %q, want last %q", tc.method, tc.path, ref.got, tc.refused)
		}
	}
	if ran {
		t.Error("the chain ran for a refused request")
	}
	if ref.last.Transport != policy.REST || ref.last.ClientIP != "127.0.0.1" {
		t.Errorf("refused call facts: %+v", ref.last)
	}
}

// Errors from the chain are written by the same handler, with the source
// the chain set, and are not counted again as refusals.
func TestChainErrors(t *testing.T) {
	var source string
	srv, ref := door(t, func(ctx context.Context, _ any) (any, error) {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(policy.ErrorSourceKey, source, "retry-after", "3"))
		if source == policy.SourceBackend {
			return nil, status.Error(codes.NotFound, "no such product")
		}
		return nil, policy.Error(codes.Unavailable, policy.ReasonNoHealthyBackend, "no instance", nil)
	})
	source = policy.SourceGateway
	if got := do(t, srv, "GET", "/v1/products/x", ""); got.status != 503 || got.reason != policy.ReasonNoHealthyBackend || got.source != "gateway" || got.header.Get("Retry-After") != "3" {
		t.Errorf("gateway error: %+v", got)
	}
	source = policy.SourceBackend
	if got := do(t, srv, "GET", "/v1/products/x", ""); got.status != 404 || got.reason != "" || got.source != "backend" {
		t.Errorf("backend error: %+v, want 404 passed through without an ErrorInfo", got)
	}
	if len(ref.got) != 0 {
		t.Errorf("chain errors counted as refusals: %q", ref.got)
	}
}

// The door hands grpc-gateway the reply the chain returned, decoded.
func TestUnaryInProcess(t *testing.T) {
	srv, _ := door(t, func(ctx context.Context, req any) (any, error) {
		if p, ok := policy.FromContext(ctx); ok {
			t.Errorf("the door put call facts %v: that is the chain's job", p)
		}
		id := req.(*catalogv1.GetProductRequest).GetId()
		return &catalogv1.GetProductResponse{Product: &catalogv1.Product{Id: id}}, nil
	})
	resp, err := srv.Client().Get(srv.URL + "/v1/products/prd-7")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Product struct{ ID string } }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 || body.Product.ID != "prd-7" {
		t.Errorf("GET: %d %+v %v", resp.StatusCode, body, err)
	}
}
