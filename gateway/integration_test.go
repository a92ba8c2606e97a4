package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gw/portico/gateway"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/rest"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/orders"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func TestRESTCatalogCRUD(t *testing.T) {
	w := newWorld(t, false)
	inst := w.startCatalog()

	list := w.rest("GET", "/v1/products", nil)
	if list.Status != 200 {
		t.Fatalf("list: %d %s", list.Status, list.Raw)
	}
	if ps, _ := list.Body["products"].([]any); len(ps) == 0 {
		t.Fatalf("list: want seeded products, got %s", list.Raw)
	}
	if got := list.Header.Get("X-Instance-Id"); got != inst.ID() {
		t.Errorf("X-Instance-Id = %q, want %q", got, inst.ID())
	}
	for _, hop := range []string{"Grpc-Metadata-Content-Type", "X-Portico-Error-Source"} {
		if v := list.Header.Get(hop); v != "" {
			t.Errorf("%s leaked to the REST client: %q", hop, v)
		}
	}

	created := w.rest("POST", "/v1/products", map[string]any{
		"sku": "TEST-001", "name": "Test kettle", "price": 2599, "currency": "EUR", "stock": 3, "category": "kitchen",
	})
	if created.Status != 200 {
		t.Fatalf("create: %d %s", created.Status, created.Raw)
	}
	id, _ := field(created.Body, "product", "id").(string)
	if id == "" {
		t.Fatalf("create: no id in %s", created.Raw)
	}

	got := w.rest("GET", "/v1/products/"+id, nil)
	if got.Status != 200 || field(got.Body, "product", "name") != "Test kettle" {
		t.Fatalf("get: %d %s", got.Status, got.Raw)
	}
	// int64 travels as a JSON string in proto3 JSON.
	if field(got.Body, "product", "price") != "2599" {
		t.Errorf("price = %v, want \"2599\"", field(got.Body, "product", "price"))
	}

	patched := w.rest("PATCH", "/v1/products/"+id, map[string]any{"price": 1999})
	if patched.Status != 200 || field(patched.Body, "product", "price") != "1999" || field(patched.Body, "product", "name") != "Test kettle" {
		t.Fatalf("patch: %d %s", patched.Status, patched.Raw)
	}

	filtered := w.rest("GET", "/v1/products?category=kitchen&page_size=100", nil)
	found := false
	for _, p := range filtered.Body["products"].([]any) {
		pm := p.(map[string]any)
		if pm["category"] != "kitchen" {
			t.Errorf("category filter returned %v", pm["category"])
		}
		found = found || pm["id"] == id
	}
	if !found {
		t.Errorf("filtered list lacks the new product: %s", filtered.Raw)
	}

	if del := w.rest("DELETE", "/v1/products/"+id, nil); del.Status != 200 {
		t.Fatalf("delete: %d %s", del.Status, del.Raw)
	}
	gone := w.rest("GET", "/v1/products/"+id, nil)
	if gone.Status != http.StatusNotFound || gone.Body["code"] != float64(codes.NotFound) {
		t.Fatalf("get after delete: %d %s", gone.Status, gone.Raw)
	}
	if src := gone.Header.Get("X-Portico-Error-Source"); src != "backend" {
		t.Errorf("X-Portico-Error-Source = %q, want backend", src)
	}
	if !strings.Contains(gone.Body["message"].(string), id) {
		t.Errorf("message %q should name the product", gone.Body["message"])
	}
}

func TestGRPCCatalogCRUD(t *testing.T) {
	w := newWorld(t, false)
	inst := w.startCatalog()
	c := w.catalogClient()
	ctx := context.Background()

	var header metadata.MD
	list, err := c.ListProducts(ctx, &catalogv1.ListProductsRequest{}, grpc.Header(&header))
	if err != nil || len(list.GetProducts()) == 0 {
		t.Fatalf("list: %v (%d products)", err, len(list.GetProducts()))
	}
	if got := header.Get("x-instance-id"); len(got) != 1 || got[0] != inst.ID() {
		t.Errorf("x-instance-id = %v, want %q", got, inst.ID())
	}
	created, err := c.CreateProduct(ctx, &catalogv1.CreateProductRequest{Product: &catalogv1.Product{
		Sku: "GRPC-001", Name: "Teapot", Price: 1500, Currency: "EUR", Stock: 1, Category: "kitchen",
	}})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetProduct().GetId()
	upd, err := c.UpdateProduct(ctx, &catalogv1.UpdateProductRequest{
		Product:    &catalogv1.Product{Id: id, Stock: 9},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"stock"}},
	})
	if err != nil || upd.GetProduct().GetStock() != 9 || upd.GetProduct().GetName() != "Teapot" {
		t.Fatalf("update: %v %v", err, upd)
	}
	if _, err := c.DeleteProduct(ctx, &catalogv1.DeleteProductRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	var trailer metadata.MD
	_, err = c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: id}, grpc.Trailer(&trailer))
	if status.Code(err) != codes.NotFound {
		t.Fatalf("get after delete: %v, want NotFound", err)
	}
	if src := trailer.Get(policy.ErrorSourceKey); len(src) != 1 || src[0] != "backend" {
		t.Errorf("%s = %v, want backend", policy.ErrorSourceKey, src)
	}
}

func TestOrdersOverBothTransports(t *testing.T) {
	w := newWorld(t, false)
	w.startCatalog()
	w.startOrders(orders.WithStatusStep(0))

	// REST.
	created := w.rest("POST", "/v1/orders", map[string]any{"items": []any{map[string]any{"productId": "prd-000001", "quantity": 2}}})
	if created.Status != 200 {
		t.Fatalf("create order: %d %s", created.Status, created.Raw)
	}
	id, _ := field(created.Body, "order", "id").(string)
	if field(created.Body, "order", "status") != "ORDER_STATUS_PENDING" || field(created.Body, "order", "total") == "0" {
		t.Fatalf("create order: %s", created.Raw)
	}
	if got := w.rest("GET", "/v1/orders/"+id, nil); got.Status != 200 || field(got.Body, "order", "id") != id {
		t.Fatalf("get order: %d %s", got.Status, got.Raw)
	}
	if got := w.rest("GET", "/v1/orders?status=ORDER_STATUS_PENDING", nil); got.Status != 200 || len(got.Body["orders"].([]any)) != 1 {
		t.Fatalf("list orders: %d %s", got.Status, got.Raw)
	}
	cancelled := w.rest("POST", "/v1/orders/"+id+":cancel", map[string]any{})
	if cancelled.Status != 200 || field(cancelled.Body, "order", "status") != "ORDER_STATUS_CANCELLED" {
		t.Fatalf("cancel: %d %s", cancelled.Status, cancelled.Raw)
	}
	again := w.rest("POST", "/v1/orders/"+id+":cancel", map[string]any{})
	if again.Status != http.StatusBadRequest || again.Body["code"] != float64(codes.FailedPrecondition) {
		t.Fatalf("second cancel: %d %s, want 400 FAILED_PRECONDITION", again.Status, again.Raw)
	}
	tooMany := w.rest("POST", "/v1/orders", map[string]any{"items": []any{map[string]any{"productId": "prd-000001", "quantity": 1000}}})
	if tooMany.Status != http.StatusBadRequest || !strings.Contains(fmt.Sprint(tooMany.Body["message"]), "stock") {
		t.Fatalf("order beyond stock: %d %s", tooMany.Status, tooMany.Raw)
	}

	// Native gRPC.
	oc := w.ordersClient()
	ctx := context.Background()
	o, err := oc.CreateOrder(ctx, &ordersv1.CreateOrderRequest{Items: []*ordersv1.LineItem{{ProductId: "prd-000002", Quantity: 1}}})
	if err != nil || o.GetOrder().GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_PENDING || o.GetOrder().GetTotal() <= 0 {
		t.Fatalf("grpc create order: %v %v", err, o)
	}
	got, err := oc.GetOrder(ctx, &ordersv1.GetOrderRequest{Id: o.GetOrder().GetId()})
	if err != nil || got.GetOrder().GetTotal() != o.GetOrder().GetTotal() {
		t.Fatalf("grpc get order: %v %v", err, got)
	}
	lst, err := oc.ListOrders(ctx, &ordersv1.ListOrdersRequest{})
	if err != nil || len(lst.GetOrders()) != 2 {
		t.Fatalf("grpc list orders: %v, %d orders, want 2", err, len(lst.GetOrders()))
	}
	if _, err := oc.CancelOrder(ctx, &ordersv1.CancelOrderRequest{Id: o.GetOrder().GetId()}); err != nil {
		t.Fatal(err)
	}
	_, err = oc.GetOrder(ctx, &ordersv1.GetOrderRequest{Id: "ord-999999"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("grpc get unknown order: %v", err)
	}
}

func TestServerStreamOverBothTransports(t *testing.T) {
	w := newWorld(t, false)
	w.startCatalog()
	ordersInst := w.startOrders(orders.WithStatusStep(100 * time.Millisecond))
	want := []string{"ORDER_STATUS_PENDING", "ORDER_STATUS_CONFIRMED", "ORDER_STATUS_SHIPPED"}

	// gRPC: the stream passes through.
	oc := w.ordersClient()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o, err := oc.CreateOrder(ctx, &ordersv1.CreateOrderRequest{Items: []*ordersv1.LineItem{{ProductId: "prd-000001", Quantity: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := oc.WatchOrder(ctx, &ordersv1.WatchOrderRequest{Id: o.GetOrder().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("grpc watch: %v after %v", err, got)
		}
		got = append(got, m.GetOrder().GetStatus().String())
	}
	if hdr, _ := stream.Header(); len(hdr.Get("x-instance-id")) != 1 {
		t.Errorf("stream header lacks x-instance-id: %v", hdr)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("grpc watch statuses = %v, want %v", got, want)
	}

	// REST: newline-delimited JSON, one {"result": ...} per message.
	created := w.rest("POST", "/v1/orders", map[string]any{"items": []any{map[string]any{"productId": "prd-000001", "quantity": 1}}})
	id := field(created.Body, "order", "id").(string)
	req, _ := http.NewRequestWithContext(ctx, "GET", w.base+"/v1/orders/"+id+":watch", nil)
	req.Header.Set("X-Api-Key", w.key)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("rest watch: %d", resp.StatusCode)
	}
	got = nil
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			Result struct {
				Order struct{ Status string } `json:"order"`
			} `json:"result"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("rest watch line %q: %v", sc.Text(), err)
		}
		if line.Result.Order.Status == "" {
			t.Fatalf("rest watch error: %s", sc.Text()) // a google.rpc.Status
		}
		got = append(got, line.Result.Order.Status)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("rest watch statuses = %v, want %v", got, want)
	}

	// Both streams were measured as calls to the instance that served them
	// (and so were the two unary CreateOrder calls).
	m, _ := scrape(t, w)
	series := `portico_backend_requests_total{backend="` + w.orders + `",code="OK",instance="` + ordersInst.ID() + `"}`
	if m[series] != 4 {
		t.Errorf("%s = %v, want 4 (two CreateOrder, two WatchOrder)", series, m[series])
	}
}

// instanceOf calls GetProduct over gRPC and returns the answering instance.
func instanceOf(ctx context.Context, c catalogv1.CatalogServiceClient) (string, error) {
	var h metadata.MD
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"}, grpc.Header(&h)); err != nil {
		return "", err
	}
	if v := h.Get("x-instance-id"); len(v) == 1 {
		return v[0], nil
	}
	return "", errors.New("no x-instance-id")
}

func TestLoadSharedAndFailover(t *testing.T) {
	w := newWorld(t, false)
	a := w.startCatalog()
	b := w.startCatalog()
	w.waitHealthy(w.catalog, a.ID(), b.ID())
	c := w.catalogClient()
	ctx := context.Background()

	// Both instances answer; round robin alternates once both are known.
	counts := map[string]int{}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < 200 && time.Now().Before(deadline) && (counts[a.ID()] < 5 || counts[b.ID()] < 5); i++ {
		id, err := instanceOf(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		counts[id]++
	}
	if counts[a.ID()] < 5 || counts[b.ID()] < 5 {
		t.Fatalf("load not shared: %v", counts)
	}
	// REST too.
	restSeen := map[string]bool{}
	for i := 0; i < 20; i++ {
		restSeen[w.rest("GET", "/v1/products/prd-000001", nil).Header.Get("X-Instance-Id")] = true
	}
	if !restSeen[a.ID()] || !restSeen[b.ID()] {
		t.Errorf("REST calls reached %v, want both %s and %s", restSeen, a.ID(), b.ID())
	}

	// a crashes (no deregistration). Once Consul's health check has seen it
	// and the gateway's resolver has dropped it, every call reaches b.
	a.Kill()
	w.waitHealthy(w.catalog, b.ID())
	w.waitRoutedExactly(w.catalog, b.ID())
	for i := range 20 {
		if id, err := instanceOf(ctx, c); err != nil || id != b.ID() {
			t.Fatalf("call %d after failover: %q %v, want %s", i, id, err, b.ID())
		}
	}
}

func TestNoHealthyInstanceFailsFast(t *testing.T) {
	w := newWorld(t, false, func(c *gateway.Config) {
		// A long deadline: the failure must come from "no instance", not from waiting it out.
		c.Services["catalog.v1.CatalogService"] = gateway.ServiceConfig{Backend: c.Services["catalog.v1.CatalogService"].Backend, Timeout: time.Minute}
	})
	check := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var trailer metadata.MD
		_, err := w.catalogClient().GetProduct(ctx, &catalogv1.GetProductRequest{Id: "prd-000001"}, grpc.Trailer(&trailer))
		st := status.Convert(err)
		if st.Code() != codes.Unavailable {
			t.Fatalf("%s: grpc: %v, want UNAVAILABLE before the client's 5s deadline", what, err)
		}
		if src := trailer.Get(policy.ErrorSourceKey); len(src) != 1 || src[0] != "gateway" {
			t.Errorf("%s: error source %v, want gateway", what, src)
		}
		var info *errdetails.ErrorInfo
		for _, d := range st.Details() {
			if i, ok := d.(*errdetails.ErrorInfo); ok {
				info = i
			}
		}
		if info.GetReason() != policy.ReasonNoHealthyBackend || info.GetDomain() != policy.ErrorDomain {
			t.Errorf("%s: ErrorInfo = %v", what, info)
		}
		r := w.rest("GET", "/v1/products/prd-000001", nil)
		if r.Status != http.StatusServiceUnavailable || r.Header.Get("X-Portico-Error-Source") != "gateway" {
			t.Fatalf("%s: rest: %d %v %s", what, r.Status, r.Header, r.Raw)
		}
		if reason, _ := errorInfo(r.Body); reason != policy.ReasonNoHealthyBackend {
			t.Errorf("%s: rest reason = %q", what, reason)
		}
	}
	check("never registered")

	inst := w.startCatalog()
	if _, err := instanceOf(context.Background(), w.catalogClient()); err != nil {
		t.Fatalf("with an instance: %v", err)
	}
	inst.Kill()
	// Wait for the state, not for a first failure: Consul marks the instance
	// critical and the gateway's resolver drops it. Until then a call may
	// still pick the dead instance's connection and fail another way.
	w.waitHealthy(w.catalog)
	w.waitRoutedExactly(w.catalog)
	check("last instance gone")
}

func TestConsulStoppedKeepsServingKnownInstances(t *testing.T) {
	w := newWorld(t, true)
	w.startCatalog()
	c := w.catalogClient()
	if _, err := instanceOf(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	before, _ := w.backend(w.catalog)
	w.agent.Stop()
	// The state to wait for: the gateway's watch has failed against the
	// stopped agent several times. The last known instances must still serve.
	testutil.Eventually(t, 20*time.Second, "three failed Consul queries", func() bool {
		b, _ := w.backend(w.catalog)
		return b.WatchErrors >= before.WatchErrors+3
	})
	for i := range 10 {
		if _, err := instanceOf(context.Background(), c); err != nil {
			t.Fatalf("call %d after Consul stopped: %v", i, err)
		}
		if r := w.rest("GET", "/v1/products/prd-000001", nil); r.Status != 200 {
			t.Fatalf("rest call %d after Consul stopped: %d %s", i, r.Status, r.Raw)
		}
	}
}

func TestErrorBodies(t *testing.T) {
	w := newWorld(t, false)
	w.startCatalog()
	w.startOrders(orders.WithStatusStep(0))

	cases := []struct {
		name, method, path, body string
		status                   int
		code                     codes.Code
		source, reason, msgPart  string
	}{
		{"unknown path", "GET", "/v2/nothing", "", 404, codes.NotFound, "gateway", policy.ReasonNoRoute, "no route for GET /v2/nothing"},
		{"wrong method", "PUT", "/v1/products", "{}", 405, codes.Unimplemented, "gateway", policy.ReasonNoRoute, "PUT"},
		{"malformed json", "POST", "/v1/products", `{"sku": "A`, 400, codes.InvalidArgument, "gateway", policy.ReasonBadRequest, ""},
		{"body not UTF-8", "POST", "/v1/products", "{\"sku\": \"ABC-1\", \"name\": \"\xff\", \"currency\": \"EUR\"}", 400, codes.InvalidArgument, "gateway", policy.ReasonBadRequest, "UTF-8"},
		{"data after the body", "POST", "/v1/products", `{"sku": "ABC-1", "name": "x", "currency": "EUR"} {"sku": "ABC-2"}`, 400, codes.InvalidArgument, "gateway", policy.ReasonBadRequest, "more after its JSON value"},
		{"wrong field type", "POST", "/v1/products", `{"sku": 12, "name": "x", "currency": "EUR"}`, 400, codes.InvalidArgument, "gateway", policy.ReasonBadRequest, "sku"},
		{"unknown field", "POST", "/v1/products", `{"skew": "ABC-1", "name": "x", "currency": "EUR"}`, 400, codes.InvalidArgument, "gateway", policy.ReasonBadRequest, "skew"},
		{"unknown enum value", "GET", "/v1/orders?status=ORDER_STATUS_LOST", "", 400, codes.InvalidArgument, "gateway", policy.ReasonBadRequest, "ORDER_STATUS_LOST"},
		{"backend not found", "GET", "/v1/products/prd-404", "", 404, codes.NotFound, "backend", "", "prd-404"},
		{"body over the limit", "POST", "/v1/products", `{"sku": "` + strings.Repeat("A", rest.MaxBodyBytes) + `"}`,
			413, codes.ResourceExhausted, "gateway", policy.ReasonBadRequest, "over the limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			r := w.rest(tc.method, tc.path, body)
			if r.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.status, r.Raw)
			}
			if r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type = %q", r.Header.Get("Content-Type"))
			}
			if r.Body["code"] != float64(tc.code) {
				t.Errorf("code = %v, want %d (%s)", r.Body["code"], tc.code, tc.code)
			}
			msg, _ := r.Body["message"].(string)
			if msg == "" || !strings.Contains(msg, tc.msgPart) {
				t.Errorf("message %q should contain %q", msg, tc.msgPart)
			}
			if got := r.Header.Get("X-Portico-Error-Source"); got != tc.source {
				t.Errorf("X-Portico-Error-Source = %q, want %q", got, tc.source)
			}
			reason, domain := errorInfo(r.Body)
			if reason != tc.reason {
				t.Errorf("ErrorInfo reason = %q, want %q (body %s)", reason, tc.reason, r.Raw)
			}
			if tc.reason != "" && domain != policy.ErrorDomain {
				t.Errorf("ErrorInfo domain = %q", domain)
			}
		})
	}

	t.Run("body over the limit, length unknown", func(t *testing.T) {
		// Chunked: the limit is found while grpc-gateway reads the body.
		body := io.MultiReader(strings.NewReader(`{"sku": "`), io.LimitReader(repeatReader('A'), rest.MaxBodyBytes))
		req, _ := http.NewRequest("POST", w.base+"/v1/products", body)
		req.Header.Set("X-Api-Key", w.key)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st struct {
			Code    codes.Code
			Message string
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 400 || st.Code != codes.InvalidArgument || !strings.Contains(st.Message, "too large") {
			t.Errorf("got %d %+v, want 400 INVALID_ARGUMENT saying the body is too large", resp.StatusCode, st)
		}
	})

	t.Run("grpc payload that is not protobuf", func(t *testing.T) {
		// Field 1 (sku) claims 5 bytes and carries 1: no CreateProductRequest.
		var trailer metadata.MD
		var reply []byte
		err := w.conn.Invoke(context.Background(), "/catalog.v1.CatalogService/CreateProduct", []byte{0x0a, 0x05, 'A'}, &reply,
			grpc.ForceCodec(bytesCodec{}), grpc.Trailer(&trailer))
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "catalog.v1.CreateProductRequest") {
			t.Fatalf("got %v, want INVALID_ARGUMENT naming the request type", err)
		}
		if got := trailer.Get(policy.ErrorSourceKey); len(got) != 1 || got[0] != "gateway" {
			t.Errorf("%s = %v, want gateway", policy.ErrorSourceKey, got)
		}
		var reason string
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				reason = info.Reason
			}
		}
		if reason != policy.ReasonBadRequest {
			t.Errorf("ErrorInfo reason = %q, want %q", reason, policy.ReasonBadRequest)
		}
		// Decoding comes after auth: an anonymous caller of a protected
		// method learns nothing about its input.
		err = w.anon().conn.Invoke(context.Background(), "/catalog.v1.CatalogService/CreateProduct", []byte{0x0a, 0x05, 'A'}, &reply,
			grpc.ForceCodec(bytesCodec{}))
		if status.Code(err) != codes.Unauthenticated || strings.Contains(err.Error(), "CreateProductRequest") {
			t.Errorf("anonymous: got %v, want UNAUTHENTICATED saying nothing of the request", err)
		}
	})

	t.Run("unknown grpc method", func(t *testing.T) {
		err := w.conn.Invoke(context.Background(), "/catalog.v1.CatalogService/Explode", &catalogv1.GetProductRequest{}, &catalogv1.GetProductResponse{})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("got %v, want UNIMPLEMENTED", err)
		}
		err = w.conn.Invoke(context.Background(), "/nope.v1.Nope/Get", &catalogv1.GetProductRequest{}, &catalogv1.GetProductResponse{})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("got %v, want UNIMPLEMENTED", err)
		}
	})
}

func TestHealthAndReflection(t *testing.T) {
	w := newWorld(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(w.conn)
	testutil.Eventually(t, 10*time.Second, "the gateway to report SERVING", func() bool {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "catalog.v1.CatalogService"})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})

	rc, err := reflectionpb.NewServerReflectionClient(w.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	joined := strings.Join(names, ",")
	for _, want := range []string{"catalog.v1.CatalogService", "orders.v1.OrderService", "grpc.health.v1.Health"} {
		if !strings.Contains(joined, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}

	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		resp, err := httpClient.Get("http://" + w.gw.AdminAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s = %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func TestGracefulShutdownFinishesInFlightStreams(t *testing.T) {
	w := newWorld(t, false)
	w.startCatalog()
	w.startOrders(orders.WithStatusStep(400 * time.Millisecond))
	oc := w.ordersClient()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	o, err := oc.CreateOrder(ctx, &ordersv1.CreateOrderRequest{Items: []*ordersv1.LineItem{{ProductId: "prd-000001", Quantity: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	id := o.GetOrder().GetId()

	// One stream over gRPC, one over REST, both in flight when shutdown starts.
	stream, err := oc.WatchOrder(ctx, &ordersv1.WatchOrderRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetOrder().GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_PENDING {
		t.Fatalf("first message: %v %v", first, err)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", w.base+"/v1/orders/"+id+":watch", nil)
	req.Header.Set("X-Api-Key", w.key)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()

	var wg sync.WaitGroup
	var shutdownErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		shutdownErr = w.gw.Shutdown(sctx)
	}()

	var last ordersv1.OrderStatus
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("grpc stream cut during shutdown: %v", err)
		}
		last = m.GetOrder().GetStatus()
	}
	if last != ordersv1.OrderStatus_ORDER_STATUS_SHIPPED {
		t.Errorf("grpc stream ended at %v, want SHIPPED", last)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("rest stream cut during shutdown: %v", err)
	}
	if !strings.Contains(string(body), "ORDER_STATUS_SHIPPED") {
		t.Errorf("rest stream ended early: %s", body)
	}
	wg.Wait()
	if shutdownErr != nil {
		t.Errorf("Shutdown: %v", shutdownErr)
	}
	if _, err := http.Get(w.base + "/v1/products"); err == nil {
		t.Error("REST listener still accepts after Shutdown")
	}
}

// bytesCodec sends and receives messages as the bytes given: a client that
// speaks gRPC but not protobuf.
type bytesCodec struct{}

func (bytesCodec) Name() string { return "proto" }

func (bytesCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }

func (bytesCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}

// TestProxiedBytesUnderConcurrency checks that messages keep their own
// bytes while the proxy hands grpc-go's pooled buffers along instead of
// copying them: concurrent calls over both doors, with large messages that
// say what they should contain, with requests decoded for validation and
// with validation off (requests forwarded undecoded). A buffer freed too
// early would show up as a message carrying another's bytes.
func TestProxiedBytesUnderConcurrency(t *testing.T) {
	for _, tc := range []struct {
		name     string
		validate bool
	}{{"requests decoded for validation", true}, {"requests undecoded", false}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, false, func(c *gateway.Config) {
				c.Validation.Disabled = !tc.validate
				// The catalog's limits (CreateProduct has its own) are too
				// low for this.
				high := &policy.RateLimit{Requests: 1 << 20, Period: time.Second, Burst: 1 << 20}
				sc := c.Services["catalog.v1.CatalogService"]
				sc.RateLimit = high
				sc.Methods = map[string]gateway.MethodConfig{"CreateProduct": {PolicyConfig: gateway.PolicyConfig{RateLimit: high}}}
				c.Services["catalog.v1.CatalogService"] = sc
			})
			w.startCatalog()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c := w.catalogClient()
			// A product's description repeats its name: any product read
			// back can be checked on its own.
			consistent := func(p *catalogv1.Product) bool {
				return p.GetDescription() == strings.Repeat(p.GetName()+" ", 3000/(len(p.GetName())+1))
			}
			const workers, calls = 6, 25
			errs := make(chan error, workers)
			var wg sync.WaitGroup
			for g := range workers {
				wg.Go(func() {
					for i := range calls {
						name := fmt.Sprintf("product %d of worker %d", i, g)
						created, err := c.CreateProduct(ctx, &catalogv1.CreateProductRequest{Product: &catalogv1.Product{
							Sku: fmt.Sprintf("SKU-%d-%d", g, i), Name: name, Currency: "EUR", Price: int64(i),
							Description: strings.Repeat(name+" ", 3000/(len(name)+1)),
						}})
						if err != nil {
							errs <- fmt.Errorf("create %q: %w", name, err)
							return
						}
						if p := created.GetProduct(); p.GetName() != name || !consistent(p) {
							errs <- fmt.Errorf("create %q answered %q", name, p.GetName())
							return
						}
						id := created.GetProduct().GetId()
						got, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: id})
						if err != nil || got.GetProduct().GetName() != name || !consistent(got.GetProduct()) {
							errs <- fmt.Errorf("grpc get %s: %q, %v", id, got.GetProduct().GetName(), err)
							return
						}
						r := w.rest("GET", "/v1/products/"+id, nil)
						if r.Status != 200 || field(r.Body, "product", "name") != name ||
							field(r.Body, "product", "description") != got.GetProduct().GetDescription() {
							errs <- fmt.Errorf("rest get %s: %d %.200s", id, r.Status, r.Raw)
							return
						}
						list, err := c.ListProducts(ctx, &catalogv1.ListProductsRequest{PageSize: 100})
						if err != nil {
							errs <- fmt.Errorf("list: %w", err)
							return
						}
						for _, p := range list.GetProducts() {
							if strings.HasPrefix(p.GetName(), "product ") && !consistent(p) { // the seeded products say nothing
								errs <- fmt.Errorf("list: product %s (%q) carries another's description", p.GetId(), p.GetName())
								return
							}
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// repeatReader reads the same byte forever.
type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// TestInterceptorsSeeGeneratedTypes checks that an interceptor added with
// WithUnaryInterceptors gets the generated Go types over both doors, as
// from any gRPC server, and that what it changes is what the backend gets.
func TestInterceptorsSeeGeneratedTypes(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	alias := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		r, ok := req.(*catalogv1.GetProductRequest)
		if !ok {
			return handler(ctx, req)
		}
		if r.GetId() == "prd-alias" {
			r.Id = "prd-000001"
		}
		resp, err := handler(ctx, req)
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%T", resp))
		mu.Unlock()
		return resp, err
	}
	w := newWorldWith(t, false, []gateway.Option{gateway.WithUnaryInterceptors(alias)})
	w.startCatalog()
	got, err := w.catalogClient().GetProduct(context.Background(), &catalogv1.GetProductRequest{Id: "prd-alias"})
	if err != nil || got.GetProduct().GetId() != "prd-000001" {
		t.Errorf("grpc: %v, %v; want the aliased product", got, err)
	}
	if r := w.rest("GET", "/v1/products/prd-alias", nil); r.Status != 200 || field(r.Body, "product", "id") != "prd-000001" {
		t.Errorf("rest: %d %s; want the aliased product", r.Status, r.Raw)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"*catalogv1.GetProductResponse", "*catalogv1.GetProductResponse"}; strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Errorf("the interceptor saw responses %v, want %v", seen, want)
	}
}
