package orders

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"github.com/portico-gw/portico/internal/testutil"
	"github.com/portico-gw/portico/services/catalog"
)

// serve runs a gRPC server on 127.0.0.1:0 until the test ends and returns a
// connection to it.
func serve(t *testing.T, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		<-done
	})
	return conn
}

// startCatalog serves a seeded catalog and returns a client for it, plus the
// server so tests can add products.
func startCatalog(t *testing.T) (catalogv1.CatalogServiceClient, *catalog.Server) {
	t.Helper()
	cat := catalog.NewServer()
	conn := serve(t, func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, cat) })
	return catalogv1.NewCatalogServiceClient(conn), cat
}

// startOrders serves an orders Server in front of cat. prepare, if not nil,
// runs before the first call, for tests that replace afterFunc.
func startOrders(t *testing.T, cat catalogv1.CatalogServiceClient, prepare func(*Server), opts ...Option) (ordersv1.OrderServiceClient, *Server) {
	t.Helper()
	s := NewServer(cat, opts...)
	if prepare != nil {
		prepare(s)
	}
	conn := serve(t, func(g *grpc.Server) { ordersv1.RegisterOrderServiceServer(g, s) })
	t.Cleanup(s.Close) // runs before the gRPC server stops
	return ordersv1.NewOrderServiceClient(conn), s
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("error = %v, want code %v", err, code)
	}
	if !strings.Contains(st.Message(), msgPart) {
		t.Fatalf("error message %q does not contain %q", st.Message(), msgPart)
	}
}

func item(id string, qty int32) *ordersv1.LineItem {
	return &ordersv1.LineItem{ProductId: id, Quantity: qty}
}

func mustCreate(ctx context.Context, t *testing.T, c ordersv1.OrderServiceClient, items ...*ordersv1.LineItem) *ordersv1.Order {
	t.Helper()
	resp, err := c.CreateOrder(ctx, &ordersv1.CreateOrderRequest{Items: items})
	if err != nil {
		t.Fatalf("CreateOrder: %v", err)
	}
	return resp.GetOrder()
}

func product(ctx context.Context, t *testing.T, c catalogv1.CatalogServiceClient, id string) *catalogv1.Product {
	t.Helper()
	resp, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: id})
	if err != nil {
		t.Fatalf("GetProduct(%s): %v", id, err)
	}
	return resp.GetProduct()
}

func TestCreateOrder(t *testing.T) {
	ctx := testCtx(t)
	cat, _ := startCatalog(t)
	placed := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	c, _ := startOrders(t, cat, nil, WithStatusStep(0), WithClock(func() time.Time { return placed }))

	book, knife := product(ctx, t, cat, "prd-000001"), product(ctx, t, cat, "prd-000003")
	mdCtx := metadata.AppendToOutgoingContext(ctx, ConsumerHeader, "acme-shop")
	o := mustCreate(mdCtx, t, c, item(book.GetId(), 2), item(knife.GetId(), 1))

	if o.GetId() != "ord-000001" {
		t.Errorf("id = %q, want ord-000001", o.GetId())
	}
	if o.GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_PENDING {
		t.Errorf("status = %v, want PENDING", o.GetStatus())
	}
	if len(o.GetItems()) != 2 || o.GetItems()[0].GetUnitPrice() != book.GetPrice() || o.GetItems()[1].GetUnitPrice() != knife.GetPrice() {
		t.Errorf("items = %v, want unit prices %d and %d from the catalog", o.GetItems(), book.GetPrice(), knife.GetPrice())
	}
	if want := 2*book.GetPrice() + knife.GetPrice(); o.GetTotal() != want {
		t.Errorf("total = %d, want %d", o.GetTotal(), want)
	}
	if o.GetCurrency() != "EUR" {
		t.Errorf("currency = %q, want EUR", o.GetCurrency())
	}
	if o.GetConsumer() != "acme-shop" {
		t.Errorf("consumer = %q, want acme-shop", o.GetConsumer())
	}
	if !o.GetCreateTime().AsTime().Equal(placed) || !o.GetUpdateTime().AsTime().Equal(placed) {
		t.Errorf("times = %v / %v, want %v", o.GetCreateTime().AsTime(), o.GetUpdateTime().AsTime(), placed)
	}

	got, err := c.GetOrder(mdCtx, &ordersv1.GetOrderRequest{Id: o.GetId()})
	if err != nil {
		t.Fatalf("GetOrder: %v", err)
	}
	if got.GetOrder().GetTotal() != o.GetTotal() || got.GetOrder().GetConsumer() != "acme-shop" {
		t.Errorf("GetOrder = %v, want %v", got.GetOrder(), o)
	}
	// Orders are visible only to the consumer who placed them.
	other := metadata.AppendToOutgoingContext(ctx, ConsumerHeader, "someone-else")
	if _, err := c.GetOrder(other, &ordersv1.GetOrderRequest{Id: o.GetId()}); status.Code(err) != codes.NotFound {
		t.Errorf("GetOrder by another consumer: %v, want NotFound", err)
	}
	if _, err := c.CancelOrder(other, &ordersv1.CancelOrderRequest{Id: o.GetId()}); status.Code(err) != codes.NotFound {
		t.Errorf("CancelOrder by another consumer: %v, want NotFound", err)
	}
	if l, err := c.ListOrders(other, &ordersv1.ListOrdersRequest{}); err != nil || len(l.GetOrders()) != 0 {
		t.Errorf("ListOrders by another consumer: %v, %d orders, want none", err, len(l.GetOrders()))
	}
	if l, err := c.ListOrders(mdCtx, &ordersv1.ListOrdersRequest{}); err != nil || len(l.GetOrders()) != 1 {
		t.Errorf("ListOrders by the owner: %v, %d orders, want 1", err, len(l.GetOrders()))
	}

	// Stock is checked, not taken.
	if after := product(ctx, t, cat, book.GetId()); after.GetStock() != book.GetStock() {
		t.Errorf("stock changed from %d to %d", book.GetStock(), after.GetStock())
	}

	anon := mustCreate(ctx, t, c, item(book.GetId(), 1))
	if anon.GetConsumer() != "" || anon.GetId() != "ord-000002" {
		t.Errorf("order without consumer header = %v, want id ord-000002 and no consumer", anon)
	}
}

func TestCreateOrderRejects(t *testing.T) {
	ctx := testCtx(t)
	cat, catSrv := startCatalog(t)
	usd, err := catSrv.CreateProduct(ctx, &catalogv1.CreateProductRequest{Product: &catalogv1.Product{
		Sku: "US-MUG-1", Name: "Mug", Price: 1200, Currency: "USD", Stock: 10, Category: "kitchen",
	}})
	if err != nil {
		t.Fatalf("CreateProduct: %v", err)
	}
	knife := product(ctx, t, cat, "prd-000003")
	c, _ := startOrders(t, cat, nil, WithStatusStep(0))

	tooMany := make([]*ordersv1.LineItem, 51)
	for i := range tooMany {
		tooMany[i] = item(fmt.Sprintf("prd-%06d", i+1), 1)
	}
	tests := []struct {
		name  string
		items []*ordersv1.LineItem
		code  codes.Code
		msg   string
	}{
		{"unknown product", []*ordersv1.LineItem{item("prd-000001", 1), item("prd-999999", 1)}, codes.FailedPrecondition, `product "prd-999999" does not exist`},
		{"not enough stock", []*ordersv1.LineItem{item(knife.GetId(), knife.GetStock()+1)},
			codes.FailedPrecondition, fmt.Sprintf("not enough stock for %q: want %d, have %d", knife.GetId(), knife.GetStock()+1, knife.GetStock())},
		{"mixed currencies", []*ordersv1.LineItem{item("prd-000001", 1), item(usd.GetProduct().GetId(), 1)}, codes.FailedPrecondition, "one currency"},
		{"no items", nil, codes.InvalidArgument, "items"},
		{"too many items", tooMany, codes.InvalidArgument, "items"},
		{"zero quantity", []*ordersv1.LineItem{item("prd-000001", 0)}, codes.InvalidArgument, "items[0].quantity"},
		{"no product id", []*ordersv1.LineItem{item("", 1)}, codes.InvalidArgument, "items[0].product_id"},
		{"duplicate product", []*ordersv1.LineItem{item("prd-000001", 1), item("prd-000001", 1)}, codes.InvalidArgument, "only once"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.CreateOrder(ctx, &ordersv1.CreateOrderRequest{Items: tt.items})
			wantCode(t, err, tt.code, tt.msg)
		})
	}
	list, err := c.ListOrders(ctx, &ordersv1.ListOrdersRequest{})
	if err != nil || len(list.GetOrders()) != 0 {
		t.Fatalf("after rejected creates: %d orders, err %v; want none", len(list.GetOrders()), err)
	}
}

// faultyCatalog is a catalog whose GetProduct fails or stalls.
type faultyCatalog struct {
	catalogv1.UnimplementedCatalogServiceServer
	err      error
	deadline chan time.Duration // receives the time left on each call's deadline, or -1
}

func (f *faultyCatalog) GetProduct(ctx context.Context, _ *catalogv1.GetProductRequest) (*catalogv1.GetProductResponse, error) {
	if f.deadline != nil {
		left := time.Duration(-1)
		if d, ok := ctx.Deadline(); ok {
			left = time.Until(d)
		}
		f.deadline <- left
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return nil, f.err
}

func startFaultyCatalog(t *testing.T, f *faultyCatalog) catalogv1.CatalogServiceClient {
	conn := serve(t, func(s *grpc.Server) { catalogv1.RegisterCatalogServiceServer(s, f) })
	return catalogv1.NewCatalogServiceClient(conn)
}

func TestCreateOrderCatalogFailure(t *testing.T) {
	ctx := testCtx(t)
	cat := startFaultyCatalog(t, &faultyCatalog{err: status.Error(codes.Internal, "disk on fire")})
	c, _ := startOrders(t, cat, nil)
	_, err := c.CreateOrder(ctx, &ordersv1.CreateOrderRequest{Items: []*ordersv1.LineItem{item("prd-000001", 1)}})
	wantCode(t, err, codes.Unavailable, "catalog unavailable: disk on fire")
	if strings.Contains(status.Convert(err).Message(), "rpc error") {
		t.Errorf("message leaks the catalog's error chain: %q", status.Convert(err).Message())
	}
}

func TestCreateOrderCatalogDown(t *testing.T) {
	ctx := testCtx(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := lis.Addr().String()
	_ = lis.Close() // nothing listens there any more
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c, _ := startOrders(t, catalogv1.NewCatalogServiceClient(conn), nil)
	_, err = c.CreateOrder(ctx, &ordersv1.CreateOrderRequest{Items: []*ordersv1.LineItem{item("prd-000001", 1)}})
	wantCode(t, err, codes.Unavailable, "catalog unavailable: ")
}

func TestCreateOrderPropagatesDeadline(t *testing.T) {
	f := &faultyCatalog{deadline: make(chan time.Duration, 1)}
	c, _ := startOrders(t, startFaultyCatalog(t, f), nil)

	const timeout = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := c.CreateOrder(ctx, &ordersv1.CreateOrderRequest{Items: []*ordersv1.LineItem{item("prd-000001", 1)}})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("CreateOrder error = %v, want DeadlineExceeded", err)
	}
	select {
	case left := <-f.deadline:
		if left <= 0 || left > timeout {
			t.Fatalf("catalog saw %v left on its deadline, want the client's (at most %v)", left, timeout)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("catalog was never called")
	}
}

func TestStatusProgression(t *testing.T) {
	ctx := testCtx(t)
	cat, _ := startCatalog(t)
	c, _ := startOrders(t, cat, nil, WithStatusStep(20*time.Millisecond))
	o := mustCreate(ctx, t, c, item("prd-000001", 1))

	var seen []ordersv1.OrderStatus
	testutil.Eventually(t, 5*time.Second, "the order to ship", func() bool {
		got, err := c.GetOrder(ctx, &ordersv1.GetOrderRequest{Id: o.GetId()})
		if err != nil {
			t.Fatalf("GetOrder: %v", err)
		}
		if st := got.GetOrder().GetStatus(); len(seen) == 0 || seen[len(seen)-1] != st {
			seen = append(seen, st)
		}
		if got.GetOrder().GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_SHIPPED {
			return false
		}
		if !got.GetOrder().GetUpdateTime().AsTime().After(o.GetCreateTime().AsTime()) {
			t.Errorf("update_time %v not after create_time %v", got.GetOrder().GetUpdateTime().AsTime(), o.GetCreateTime().AsTime())
		}
		return true
	})
	for i := 1; i < len(seen); i++ {
		if seen[i] < seen[i-1] {
			t.Fatalf("statuses went backwards: %v", seen)
		}
	}
}

func TestWithoutStepOrdersStayPending(t *testing.T) {
	ctx := testCtx(t)
	cat, _ := startCatalog(t)
	// No step may even be scheduled: a scheduled one would fire later.
	noSteps := func(s *Server) {
		s.afterFunc = func(d time.Duration, f func()) *time.Timer {
			t.Errorf("a status step was scheduled in %v without a status step", d)
			return time.AfterFunc(d, f)
		}
	}
	c, s := startOrders(t, cat, noSteps, WithStatusStep(0))
	o := mustCreate(ctx, t, c, item("prd-000001", 1))
	if n := pendingTimers(s); n != 0 {
		t.Fatalf("%d status steps pending, want none", n)
	}
	got, err := c.GetOrder(ctx, &ordersv1.GetOrderRequest{Id: o.GetId()})
	if err != nil || got.GetOrder().GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_PENDING {
		t.Fatalf("GetOrder = %v, %v; want PENDING", got, err)
	}
}

func TestCancelOrder(t *testing.T) {
	ctx := testCtx(t)
	cat, _ := startCatalog(t)
	c, s := startOrders(t, cat, nil, WithStatusStep(0))

	pending := mustCreate(ctx, t, c, item("prd-000001", 1))
	resp, err := c.CancelOrder(ctx, &ordersv1.CancelOrderRequest{Id: pending.GetId()})
	if err != nil {
		t.Fatalf("CancelOrder(pending): %v", err)
	}
	if resp.GetOrder().GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_CANCELLED {
		t.Fatalf("status = %v, want CANCELLED", resp.GetOrder().GetStatus())
	}
	_, err = c.CancelOrder(ctx, &ordersv1.CancelOrderRequest{Id: pending.GetId()})
	wantCode(t, err, codes.FailedPrecondition, "is cancelled and can no longer be cancelled")

	confirmed := mustCreate(ctx, t, c, item("prd-000001", 1))
	s.advance(confirmed.GetId())
	if _, err := c.CancelOrder(ctx, &ordersv1.CancelOrderRequest{Id: confirmed.GetId()}); err != nil {
		t.Fatalf("CancelOrder(confirmed): %v", err)
	}

	shipped := mustCreate(ctx, t, c, item("prd-000001", 1))
	s.advance(shipped.GetId())
	s.advance(shipped.GetId())
	_, err = c.CancelOrder(ctx, &ordersv1.CancelOrderRequest{Id: shipped.GetId()})
	wantCode(t, err, codes.FailedPrecondition, "is shipped")
	got, _ := c.GetOrder(ctx, &ordersv1.GetOrderRequest{Id: shipped.GetId()})
	if got.GetOrder().GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_SHIPPED {
		t.Fatalf("refused cancel changed status to %v", got.GetOrder().GetStatus())
	}

	_, err = c.CancelOrder(ctx, &ordersv1.CancelOrderRequest{Id: "ord-999999"})
	wantCode(t, err, codes.NotFound, `order "ord-999999" not found`)
	_, err = c.GetOrder(ctx, &ordersv1.GetOrderRequest{Id: "ord-999999"})
	wantCode(t, err, codes.NotFound, `order "ord-999999" not found`)
}

func TestCancelStopsProgression(t *testing.T) {
	ctx := testCtx(t)
	cat, _ := startCatalog(t)
	// A step far off, so that it is still pending when the order is
	// cancelled.
	c, s := startOrders(t, cat, nil, WithStatusStep(time.Hour))
	o := mustCreate(ctx, t, c, item("prd-000001", 1))
	if n := pendingTimers(s); n != 1 {
		t.Fatalf("%d status steps pending after create, want 1", n)
	}
	if _, err := c.CancelOrder(ctx, &ordersv1.CancelOrderRequest{Id: o.GetId()}); err != nil {
		t.Fatalf("CancelOrder: %v", err)
	}
	if n := pendingTimers(s); n != 0 {
		t.Fatalf("%d status steps pending after cancel, want none", n)
	}
	// A step that fired while CancelOrder held the lock runs after it.
	s.advance(o.GetId())
	got, err := c.GetOrder(ctx, &ordersv1.GetOrderRequest{Id: o.GetId()})
	if err != nil || got.GetOrder().GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_CANCELLED {
		t.Fatalf("GetOrder = %v, %v; want it to stay CANCELLED", got, err)
	}
}

func TestListOrders(t *testing.T) {
	ctx := testCtx(t)
	cat, _ := startCatalog(t)
	c, _ := startOrders(t, cat, nil, WithStatusStep(0))
	for range 25 {
		mustCreate(ctx, t, c, item("prd-000002", 1))
	}
	var ids []string
	var sizes []int
	token := ""
	for range 5 {
		resp, err := c.ListOrders(ctx, &ordersv1.ListOrdersRequest{PageToken: token})
		if err != nil {
			t.Fatalf("ListOrders: %v", err)
		}
		sizes = append(sizes, len(resp.GetOrders()))
		for _, o := range resp.GetOrders() {
			ids = append(ids, o.GetId())
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if want := []int{20, 5}; !slices.Equal(sizes, want) {
		t.Errorf("page sizes = %v, want %v", sizes, want)
	}
	if len(ids) != 25 || ids[0] != "ord-000001" || ids[24] != "ord-000025" || !slices.IsSorted(ids) {
		t.Errorf("ids = %v, want ord-000001..ord-000025 in order", ids)
	}
	_, err := c.ListOrders(ctx, &ordersv1.ListOrdersRequest{PageToken: "%%%"})
	wantCode(t, err, codes.InvalidArgument, "invalid page_token")
}

func TestListOrdersByStatus(t *testing.T) {
	ctx := testCtx(t)
	cat, _ := startCatalog(t)
	c, s := startOrders(t, cat, nil, WithStatusStep(0))
	for i := range 6 {
		o := mustCreate(ctx, t, c, item("prd-000002", 1))
		switch i % 3 {
		case 1:
			if _, err := c.CancelOrder(ctx, &ordersv1.CancelOrderRequest{Id: o.GetId()}); err != nil {
				t.Fatalf("CancelOrder: %v", err)
			}
		case 2:
			s.advance(o.GetId())
		}
	}
	list := func(st ordersv1.OrderStatus, size int32, token string) ([]string, string) {
		t.Helper()
		resp, err := c.ListOrders(ctx, &ordersv1.ListOrdersRequest{Status: st, PageSize: size, PageToken: token})
		if err != nil {
			t.Fatalf("ListOrders(%v): %v", st, err)
		}
		var ids []string
		for _, o := range resp.GetOrders() {
			if o.GetStatus() != st {
				t.Fatalf("ListOrders(%v) returned %s in %v", st, o.GetId(), o.GetStatus())
			}
			ids = append(ids, o.GetId())
		}
		return ids, resp.GetNextPageToken()
	}
	if ids, _ := list(ordersv1.OrderStatus_ORDER_STATUS_CANCELLED, 0, ""); !slices.Equal(ids, []string{"ord-000002", "ord-000005"}) {
		t.Errorf("cancelled = %v, want ord-000002 and ord-000005", ids)
	}
	first, next := list(ordersv1.OrderStatus_ORDER_STATUS_PENDING, 1, "")
	second, last := list(ordersv1.OrderStatus_ORDER_STATUS_PENDING, 1, next)
	if !slices.Equal(first, []string{"ord-000001"}) || !slices.Equal(second, []string{"ord-000004"}) || last != "" {
		t.Errorf("pending pages = %v, %v (next %q), want [ord-000001] [ord-000004] and no next", first, second, last)
	}
	if ids, _ := list(ordersv1.OrderStatus_ORDER_STATUS_SHIPPED, 0, ""); len(ids) != 0 {
		t.Errorf("shipped = %v, want none", ids)
	}
	_, err := c.ListOrders(ctx, &ordersv1.ListOrdersRequest{Status: ordersv1.OrderStatus(42)})
	wantCode(t, err, codes.InvalidArgument, "unknown order status 42")
}

// watch collects the statuses a WatchOrder stream sends until it ends, and
// how it ended.
func watch(ctx context.Context, t *testing.T, c ordersv1.OrderServiceClient, id string, onFirst func()) ([]ordersv1.OrderStatus, error) {
	t.Helper()
	stream, err := c.WatchOrder(ctx, &ordersv1.WatchOrderRequest{Id: id})
	if err != nil {
		t.Fatalf("WatchOrder: %v", err)
	}
	var got []ordersv1.OrderStatus
	for range 10 { // a watch sends at most 3 states
		resp, err := stream.Recv()
		if err != nil {
			return got, err
		}
		if resp.GetOrder().GetId() != id {
			t.Fatalf("watch of %s sent order %s", id, resp.GetOrder().GetId())
		}
		got = append(got, resp.GetOrder().GetStatus())
		if len(got) == 1 && onFirst != nil {
			onFirst()
		}
	}
	t.Fatalf("watch sent more than 10 messages: %v", got)
	return nil, nil
}

// holdFirstStep makes a Server's first status step wait for release, so a
// test can be sure to watch the order while it is still PENDING; later steps
// run on their own.
func holdFirstStep(release <-chan struct{}) func(*Server) {
	return func(s *Server) {
		var once sync.Once
		s.afterFunc = func(d time.Duration, f func()) *time.Timer {
			hold := false
			once.Do(func() { hold = true })
			return time.AfterFunc(d, func() {
				if hold {
					<-release
				}
				f()
			})
		}
	}
}

func TestWatchOrderProgression(t *testing.T) {
	ctx := testCtx(t)
	cat, _ := startCatalog(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseFirst := func() { releaseOnce.Do(func() { close(release) }) }
	c, _ := startOrders(t, cat, holdFirstStep(release), WithStatusStep(20*time.Millisecond))
	// Close waits for a held step, so if the test fails before releasing
	// it, release it here; cleanups run last-registered first.
	t.Cleanup(releaseFirst)

	o := mustCreate(ctx, t, c, item("prd-000001", 1))
	got, err := watch(ctx, t, c, o.GetId(), releaseFirst)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("watch ended with %v, want a clean end after SHIPPED", err)
	}
	want := []ordersv1.OrderStatus{
		ordersv1.OrderStatus_ORDER_STATUS_PENDING,
		ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED,
		ordersv1.OrderStatus_ORDER_STATUS_SHIPPED,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("watched %v, want %v", got, want)
	}
	waitNoWatchers(t)
}

func TestWatchOrderSeesEveryTransition(t *testing.T) {
	ctx := testCtx(t)
	cat, _ := startCatalog(t)
	c, s := startOrders(t, cat, nil, WithStatusStep(0))
	o := mustCreate(ctx, t, c, item("prd-000001", 1))
	// Both steps happen back to back while the watcher is busy with the
	// first message; it must still see CONFIRMED, not only SHIPPED.
	got, err := watch(ctx, t, c, o.GetId(), func() {
		s.advance(o.GetId())
		s.advance(o.GetId())
	})
	if !errors.Is(err, io.EOF) {
		t.Fatalf("watch ended with %v, want io.EOF", err)
	}
	want := []ordersv1.OrderStatus{
		ordersv1.OrderStatus_ORDER_STATUS_PENDING,
		ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED,
		ordersv1.OrderStatus_ORDER_STATUS_SHIPPED,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("watched %v, want %v", got, want)
	}
}

func TestWatchOrderCancelled(t *testing.T) {
	ctx := testCtx(t)
	cat, _ := startCatalog(t)
	c, _ := startOrders(t, cat, nil, WithStatusStep(0))
	o := mustCreate(ctx, t, c, item("prd-000001", 1))
	got, err := watch(ctx, t, c, o.GetId(), func() {
		if _, err := c.CancelOrder(ctx, &ordersv1.CancelOrderRequest{Id: o.GetId()}); err != nil {
			t.Errorf("CancelOrder: %v", err)
		}
	})
	if !errors.Is(err, io.EOF) {
		t.Fatalf("watch ended with %v, want io.EOF", err)
	}
	want := []ordersv1.OrderStatus{ordersv1.OrderStatus_ORDER_STATUS_PENDING, ordersv1.OrderStatus_ORDER_STATUS_CANCELLED}
	if !slices.Equal(got, want) {
		t.Fatalf("watched %v, want %v", got, want)
	}

	// Watching an order that is already final sends it once and ends.
	got, err = watch(ctx, t, c, o.GetId(), nil)
	if !errors.Is(err, io.EOF) || !slices.Equal(got, want[1:]) {
		t.Fatalf("watch of a cancelled order = %v, %v; want [CANCELLED], io.EOF", got, err)
	}
	waitNoWatchers(t)
}

func TestWatchOrderNotFound(t *testing.T) {
	ctx := testCtx(t)
	cat, _ := startCatalog(t)
	c, _ := startOrders(t, cat, nil)
	_, err := watch(ctx, t, c, "ord-424242", nil)
	wantCode(t, err, codes.NotFound, `order "ord-424242" not found`)
}

func TestWatchOrderEndsWhenClientCancels(t *testing.T) {
	ctx := testCtx(t)
	cat, _ := startCatalog(t)
	c, _ := startOrders(t, cat, nil, WithStatusStep(0))
	o := mustCreate(ctx, t, c, item("prd-000001", 1))

	const watchers = 5
	watchCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, watchers)
	for range watchers {
		stream, err := c.WatchOrder(watchCtx, &ordersv1.WatchOrderRequest{Id: o.GetId()})
		if err != nil {
			t.Fatalf("WatchOrder: %v", err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("first Recv: %v", err)
		}
		go func() {
			_, err := stream.Recv()
			errs <- err
		}()
	}
	if n := watcherCount(); n != watchers {
		t.Fatalf("%d WatchOrder handlers running, want %d", n, watchers)
	}
	cancel()
	for range watchers {
		select {
		case err := <-errs:
			if status.Code(err) != codes.Canceled {
				t.Errorf("Recv after cancel = %v, want Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Recv did not return after cancel")
		}
	}
	waitNoWatchers(t)
}

func TestCloseEndsWatchersAndRefusesOrders(t *testing.T) {
	ctx := testCtx(t)
	cat, _ := startCatalog(t)
	c, s := startOrders(t, cat, nil, WithStatusStep(time.Hour))
	o := mustCreate(ctx, t, c, item("prd-000001", 1))
	mustCreate(ctx, t, c, item("prd-000002", 1))

	stream, err := c.WatchOrder(ctx, &ordersv1.WatchOrderRequest{Id: o.GetId()})
	if err != nil {
		t.Fatalf("WatchOrder: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first Recv: %v", err)
	}
	if n := pendingTimers(s); n != 2 {
		t.Fatalf("%d pending status steps, want 2", n)
	}

	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.Unavailable, "shutting down")
	if n := pendingTimers(s); n != 0 {
		t.Fatalf("%d pending status steps after Close, want 0", n)
	}
	_, err = c.CreateOrder(ctx, &ordersv1.CreateOrderRequest{Items: []*ordersv1.LineItem{item("prd-000001", 1)}})
	wantCode(t, err, codes.Unavailable, "shutting down")
	s.Close() // idempotent
	waitNoWatchers(t)
}

func TestConcurrentOrders(t *testing.T) {
	ctx := testCtx(t)
	cat, _ := startCatalog(t)
	c, _ := startOrders(t, cat, nil, WithStatusStep(time.Millisecond))

	const clients, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, clients*each*2)
	for range clients {
		wg.Go(func() {
			for i := range each {
				resp, err := c.CreateOrder(ctx, &ordersv1.CreateOrderRequest{Items: []*ordersv1.LineItem{item("prd-000004", 1)}})
				if err != nil {
					errs <- err
					continue
				}
				id := resp.GetOrder().GetId()
				if i%2 == 0 {
					// Cancel races the 1ms steps; both outcomes are fine.
					_, err = c.CancelOrder(ctx, &ordersv1.CancelOrderRequest{Id: id})
					if err != nil && status.Code(err) != codes.FailedPrecondition {
						errs <- err
					}
				}
				stream, err := c.WatchOrder(ctx, &ordersv1.WatchOrderRequest{Id: id})
				if err != nil {
					errs <- err
					continue
				}
				var last ordersv1.OrderStatus
				for range 5 {
					m, err := stream.Recv()
					if err != nil {
						if !errors.Is(err, io.EOF) {
							errs <- err
						}
						break
					}
					if m.GetOrder().GetStatus() <= last && m.GetOrder().GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_CANCELLED {
						errs <- fmt.Errorf("order %s went from %v to %v", id, last, m.GetOrder().GetStatus())
					}
					last = m.GetOrder().GetStatus()
				}
				if !final(last) {
					errs <- fmt.Errorf("watch of %s ended at %v", id, last)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	resp, err := c.ListOrders(ctx, &ordersv1.ListOrdersRequest{PageSize: 100})
	if err != nil || len(resp.GetOrders()) != clients*each {
		t.Fatalf("ListOrders: %d orders, err %v; want %d", len(resp.GetOrders()), err, clients*each)
	}
	waitNoWatchers(t)
}

// watcherCount counts the goroutines running a WatchOrder handler.
func watcherCount() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "orders.(*Server).WatchOrder(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// waitNoWatchers fails the test unless every WatchOrder handler has returned
// within a few seconds.
func waitNoWatchers(t *testing.T) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, "every WatchOrder handler to return", func() bool { return watcherCount() == 0 })
}

func pendingTimers(s *Server) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, rec := range s.orders {
		if rec.timer != nil {
			n++
		}
	}
	return n
}
