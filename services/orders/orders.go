package orders

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"github.com/portico-gw/portico/services/internal/page"
)

const (
	// idPrefix starts every order id; the rest is a zero-padded sequence number.
	idPrefix = "ord-"
	// ConsumerHeader is the metadata key the gateway forwards the
	// authenticated consumer in; CreateOrder records it on the order.
	ConsumerHeader = "x-portico-consumer"

	maxItems    = 50
	maxQuantity = 1000
)

// Server is an in-memory ordersv1.OrderServiceServer. It is safe for
// concurrent use. Close stops the timers that move orders along.
type Server struct {
	ordersv1.UnimplementedOrderServiceServer

	catalog catalogv1.CatalogServiceClient
	step    time.Duration
	clock   func() time.Time
	// afterFunc schedules status steps; tests replace it to hold a step back.
	afterFunc func(time.Duration, func()) *time.Timer

	closeOnce sync.Once
	closed    chan struct{}  // closed by Close; ends watchers
	steps     sync.WaitGroup // status steps scheduled and neither run nor stopped

	mu       sync.RWMutex
	isClosed bool
	seq      int                // last id number handed out
	orders   map[string]*record // by id
	ids      []string           // sorted by page.Compare
}

var _ ordersv1.OrderServiceServer = (*Server)(nil)

// record is one order and everything that watches or moves it. All fields are
// guarded by Server.mu.
type record struct {
	// history holds every state the order has been in, oldest first; the
	// last is the current one. Entries are never modified, so watchers can
	// read them after the lock is released. Keeping all of them (at most
	// three) rather than only the latest is what lets a slow watcher see
	// every transition instead of only the newest.
	history []*ordersv1.Order
	// changed is closed, and replaced, whenever history grows.
	changed chan struct{}
	// timer is the pending automatic step, nil when there is none.
	timer *time.Timer
}

func (r *record) current() *ordersv1.Order { return r.history[len(r.history)-1] }

// NewServer returns an orders service that looks products up in catalog. It
// does no I/O and starts no goroutines; timers start with the first order.
func NewServer(catalog catalogv1.CatalogServiceClient, opts ...Option) *Server {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return &Server{
		catalog:   catalog,
		step:      o.step,
		clock:     o.clock,
		afterFunc: time.AfterFunc,
		closed:    make(chan struct{}),
		orders:    make(map[string]*record),
	}
}

// Close stops moving orders along and ends every WatchOrder call with
// Unavailable. It waits for a status step that is already running, so no
// goroutine of the Server outlives it. Orders can still be read and
// cancelled; new ones are refused. Close is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.isClosed = true
		for _, rec := range s.orders {
			s.stopTimer(rec)
		}
		s.mu.Unlock()
		close(s.closed)
	})
	s.steps.Wait()
}

// CreateOrder places an order at the catalog's current prices.
//
// It checks stock but does not reserve or decrement it: the catalog has no
// atomic way to take stock (UpdateProduct sets it, which would race), and the
// example keeps the two services independent. Two orders may therefore both
// pass the check for the last unit.
func (s *Server) CreateOrder(ctx context.Context, req *ordersv1.CreateOrderRequest) (*ordersv1.CreateOrderResponse, error) {
	if err := validateItems(req.GetItems()); err != nil {
		return nil, err
	}
	if s.closing() {
		return nil, errClosed
	}

	var (
		items        = make([]*ordersv1.LineItem, 0, len(req.GetItems()))
		total        int64
		currency     string
		currencyFrom string // product that set currency, for the error message
	)
	// One call per item, in order, so the error a client sees is about the
	// first item that fails. ctx is the caller's, so its deadline bounds
	// every catalog call.
	for _, it := range req.GetItems() {
		resp, err := s.catalog.GetProduct(ctx, &catalogv1.GetProductRequest{Id: it.GetProductId()})
		if err != nil {
			return nil, catalogError(ctx, it.GetProductId(), err)
		}
		p := resp.GetProduct()
		if p.GetStock() < it.GetQuantity() {
			return nil, status.Errorf(codes.FailedPrecondition, "not enough stock for %q: want %d, have %d",
				it.GetProductId(), it.GetQuantity(), p.GetStock())
		}
		switch {
		case currency == "":
			currency, currencyFrom = p.GetCurrency(), it.GetProductId()
		case p.GetCurrency() != currency:
			return nil, status.Errorf(codes.FailedPrecondition,
				"an order has one currency: %q is priced in %s, %q in %s",
				currencyFrom, currency, it.GetProductId(), p.GetCurrency())
		}
		items = append(items, &ordersv1.LineItem{
			ProductId: it.GetProductId(),
			Quantity:  it.GetQuantity(),
			UnitPrice: p.GetPrice(),
		})
		total += int64(it.GetQuantity()) * p.GetPrice()
	}

	now := timestamppb.New(s.clock())
	o := &ordersv1.Order{
		Items:      items,
		Total:      total,
		Currency:   currency,
		Status:     ordersv1.OrderStatus_ORDER_STATUS_PENDING,
		Consumer:   consumer(ctx),
		CreateTime: now,
		UpdateTime: now,
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isClosed {
		return nil, errClosed
	}
	s.seq++
	o.Id = fmt.Sprintf("%s%06d", idPrefix, s.seq)
	rec := &record{history: []*ordersv1.Order{o}, changed: make(chan struct{})}
	s.orders[o.Id] = rec
	// Sequence numbers only grow, so appending keeps ids sorted.
	s.ids = append(s.ids, o.Id)
	s.scheduleStep(o.Id, rec)
	return &ordersv1.CreateOrderResponse{Order: clone(o)}, nil
}

// GetOrder returns one order.
func (s *Server) GetOrder(ctx context.Context, req *ordersv1.GetOrderRequest) (*ordersv1.GetOrderResponse, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rec, err := s.lookup(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	return &ordersv1.GetOrderResponse{Order: clone(rec.current())}, nil
}

// ListOrders returns orders in id order, which is also the order they were
// placed in, optionally only those in one status.
func (s *Server) ListOrders(ctx context.Context, req *ordersv1.ListOrdersRequest) (*ordersv1.ListOrdersResponse, error) {
	r, err := page.Parse(req.GetPageSize(), req.GetPageToken(), idPrefix)
	if err != nil {
		return nil, err
	}
	want := req.GetStatus()
	if _, ok := ordersv1.OrderStatus_name[int32(want)]; !ok {
		return nil, status.Errorf(codes.InvalidArgument, "status: unknown order status %d", want)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	// Each consumer sees only its own orders.
	who := consumer(ctx)
	keep := func(id string) bool {
		o := s.orders[id].current()
		return o.GetConsumer() == who && (want == ordersv1.OrderStatus_ORDER_STATUS_UNSPECIFIED || o.GetStatus() == want)
	}
	ids, next := page.Slice(s.ids, func(id string) string { return id }, keep, r)
	resp := &ordersv1.ListOrdersResponse{
		Orders:        make([]*ordersv1.Order, 0, len(ids)),
		NextPageToken: next,
	}
	for _, id := range ids {
		resp.Orders = append(resp.Orders, clone(s.orders[id].current()))
	}
	return resp, nil
}

// CancelOrder cancels an order that has not shipped.
func (s *Server) CancelOrder(ctx context.Context, req *ordersv1.CancelOrderRequest) (*ordersv1.CancelOrderResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.lookup(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	switch st := rec.current().GetStatus(); st {
	case ordersv1.OrderStatus_ORDER_STATUS_PENDING, ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED:
	default:
		return nil, status.Errorf(codes.FailedPrecondition, "order %q is %s and can no longer be cancelled",
			req.GetId(), statusName(st))
	}
	s.stopTimer(rec)
	s.setStatus(rec, ordersv1.OrderStatus_ORDER_STATUS_CANCELLED)
	return &ordersv1.CancelOrderResponse{Order: clone(rec.current())}, nil
}

// WatchOrder sends the order's current state, then every status change, and
// returns once the order is SHIPPED or CANCELLED.
func (s *Server) WatchOrder(req *ordersv1.WatchOrderRequest, stream ordersv1.OrderService_WatchOrderServer) error {
	ctx := stream.Context()
	s.mu.RLock()
	rec, err := s.lookup(ctx, req.GetId())
	var next int // index in rec.history of the next state to send
	if err == nil {
		next = len(rec.history) - 1
	}
	s.mu.RUnlock()
	if err != nil {
		return err
	}

	for {
		// Reading the new states and the channel that announces the ones
		// after them under one lock is what subscribing before reading
		// means here: no change can fall between the two.
		s.mu.RLock()
		states := rec.history[next:]
		changed := rec.changed
		s.mu.RUnlock()

		for _, o := range states {
			// Send gives up by itself when ctx ends: grpc-go's flow
			// control waits select on the stream's context.
			if err := stream.Send(&ordersv1.WatchOrderResponse{Order: clone(o)}); err != nil {
				return err
			}
			next++
			if final(o.GetStatus()) {
				return nil
			}
		}

		select {
		case <-changed:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.closed:
			return errClosed
		}
	}
}

// scheduleStep arms the timer that moves the order one status on. s.mu must
// be held.
func (s *Server) scheduleStep(id string, rec *record) {
	if s.step <= 0 || s.isClosed || final(rec.current().GetStatus()) {
		return
	}
	s.steps.Add(1)
	rec.timer = s.afterFunc(s.step, func() {
		defer s.steps.Done()
		s.advance(id)
	})
}

// advance moves an order one status on and schedules the step after that.
func (s *Server) advance(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.orders[id]
	if !ok || s.isClosed {
		return
	}
	rec.timer = nil
	switch rec.current().GetStatus() {
	case ordersv1.OrderStatus_ORDER_STATUS_PENDING:
		s.setStatus(rec, ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED)
	case ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED:
		s.setStatus(rec, ordersv1.OrderStatus_ORDER_STATUS_SHIPPED)
	default:
		// Cancelled while this step was waiting for the lock.
		return
	}
	s.scheduleStep(id, rec)
}

// stopTimer cancels the order's pending step, if any. s.mu must be held.
func (s *Server) stopTimer(rec *record) {
	if rec.timer == nil {
		return
	}
	// When Stop reports false the step is already running; it finds the
	// order final (or the server closed), does nothing, and calls Done
	// itself.
	if rec.timer.Stop() {
		s.steps.Done()
	}
	rec.timer = nil
}

// setStatus records a new state and wakes the watchers. s.mu must be held.
func (s *Server) setStatus(rec *record, st ordersv1.OrderStatus) {
	o := clone(rec.current())
	o.Status = st
	o.UpdateTime = timestamppb.New(s.clock())
	rec.history = append(rec.history, o)
	close(rec.changed)
	rec.changed = make(chan struct{})
}

// lookup finds an order of the calling consumer. Another consumer's order
// is reported as not found, so its existence does not leak. s.mu must be
// held.
func (s *Server) lookup(ctx context.Context, id string) (*record, error) {
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "id is required")
	}
	rec, ok := s.orders[id]
	if !ok || rec.current().GetConsumer() != consumer(ctx) {
		return nil, status.Errorf(codes.NotFound, "order %q not found", id)
	}
	return rec, nil
}

func (s *Server) closing() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.isClosed
}

var errClosed = status.Error(codes.Unavailable, "order service is shutting down")

// validateItems checks what pricing relies on. The gateway enforces the same
// rules from the proto's annotations; they are repeated here because a
// duplicate product would pass the stock check twice with the stock counted
// once, and unbounded quantities could overflow the total.
func validateItems(items []*ordersv1.LineItem) error {
	if len(items) == 0 || len(items) > maxItems {
		return status.Errorf(codes.InvalidArgument, "items: want 1 to %d line items, got %d", maxItems, len(items))
	}
	seen := make(map[string]bool, len(items))
	for i, it := range items {
		switch {
		case it.GetProductId() == "":
			return status.Errorf(codes.InvalidArgument, "items[%d].product_id is required", i)
		case it.GetQuantity() < 1 || it.GetQuantity() > maxQuantity:
			return status.Errorf(codes.InvalidArgument, "items[%d].quantity must be 1 to %d, got %d", i, maxQuantity, it.GetQuantity())
		case seen[it.GetProductId()]:
			return status.Errorf(codes.InvalidArgument, "items[%d]: product %q appears more than once; each product may appear only once", i, it.GetProductId())
		}
		seen[it.GetProductId()] = true
	}
	return nil
}

// catalogError turns a failed catalog call into what the orders client should
// see. Only the catalog's status message is passed on, never the error chain.
func catalogError(ctx context.Context, productID string, err error) error {
	if ctx.Err() != nil {
		// The caller's own deadline or cancellation, not a catalog fault:
		// report it as such so the client does not retry a lost cause.
		return status.FromContextError(ctx.Err()).Err()
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.NotFound:
		return status.Errorf(codes.FailedPrecondition, "product %q does not exist", productID)
	case codes.DeadlineExceeded, codes.Canceled:
		// Each hop runs its own timer for the deadline we passed on, so the
		// catalog's can fire (and reset the stream, which reads as
		// Canceled) a moment before ours does.
		return status.Error(codes.DeadlineExceeded, "deadline exceeded while calling the catalog")
	}
	// Unavailable tells the client a retry may work; that is safe because
	// nothing was stored.
	return status.Errorf(codes.Unavailable, "catalog unavailable: %s", st.Message())
}

func consumer(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, ConsumerHeader); len(v) > 0 {
		return v[0]
	}
	return ""
}

func final(st ordersv1.OrderStatus) bool {
	return st == ordersv1.OrderStatus_ORDER_STATUS_SHIPPED || st == ordersv1.OrderStatus_ORDER_STATUS_CANCELLED
}

// statusName turns ORDER_STATUS_SHIPPED into "shipped" for messages.
func statusName(st ordersv1.OrderStatus) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "ORDER_STATUS_"))
}

func clone(o *ordersv1.Order) *ordersv1.Order {
	return proto.Clone(o).(*ordersv1.Order)
}
