package validate_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/validate"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	ordersv1 "github.com/portico-gw/portico/gen/orders/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func newPolicy(t *testing.T) *validate.Policy {
	t.Helper()
	p, err := validate.New(validate.WithMessages(
		(&catalogv1.CreateProductRequest{}).ProtoReflect().Descriptor(),
		(&ordersv1.CreateOrderRequest{}).ProtoReflect().Descriptor(),
	))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func violations(t *testing.T, err error) map[string]string {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("code = %v, want INVALID_ARGUMENT (%v)", st.Code(), err)
	}
	if pol, reason := policy.Rejection(err); pol != validate.PolicyName || reason != validate.ReasonInvalid {
		t.Errorf("rejection = %s/%s", pol, reason)
	}
	out := map[string]string{}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out[v.GetField()] = v.GetReason()
				if v.GetDescription() == "" {
					t.Errorf("violation of %s has no description", v.GetField())
				}
			}
		}
	}
	return out
}

func TestEveryViolationIsListed(t *testing.T) {
	p := newPolicy(t)
	cases := []struct {
		name string
		msg  proto.Message
		want map[string]string // field path -> rule id
	}{
		{"pattern, range and message rules", &catalogv1.CreateProductRequest{Product: &catalogv1.Product{
			Sku: "lower", Currency: "euro", Price: -1, Stock: -2,
		}}, map[string]string{
			"product.sku": "string.pattern", "product.currency": "string.pattern",
			"product.price": "int64.gte_lte", "product.stock": "int32.gte",
			"": "product.name_required",
		}},
		{"required message", &catalogv1.CreateProductRequest{}, map[string]string{"product": "required"}},
		{"repeated bounds", &ordersv1.CreateOrderRequest{}, map[string]string{"items": "repeated.min_items"}},
		{"nested item and uniqueness", &ordersv1.CreateOrderRequest{Items: []*ordersv1.LineItem{
			{ProductId: "prd-1", Quantity: 0}, {ProductId: "prd-1", Quantity: 1},
		}}, map[string]string{"items[0].quantity": "int32.gte_lte", "items": "items.unique_products"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := violations(t, p.Check(tc.msg))
			for field, rule := range tc.want {
				if got[field] != rule {
					t.Errorf("violation of %q = %q, want %q (all: %v)", field, got[field], rule, got)
				}
			}
		})
	}
	if err := p.Check(&catalogv1.CreateProductRequest{Product: &catalogv1.Product{Sku: "OK-1", Name: "n", Currency: "EUR"}}); err != nil {
		t.Errorf("valid request rejected: %v", err)
	}
}

func TestMessageNamesTheFields(t *testing.T) {
	err := newPolicy(t).Check(&catalogv1.CreateProductRequest{Product: &catalogv1.Product{Sku: "x", Name: "n", Currency: "EUR"}})
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "product.sku") {
		t.Errorf("message %q should name product.sku", msg)
	}
}

// recvStream replays messages as a client stream.
type recvStream struct {
	grpc.ServerStream
	ctx  context.Context
	msgs []*ordersv1.CreateOrderRequest
}

func (s *recvStream) Context() context.Context { return s.ctx }
func (s *recvStream) RecvMsg(m any) error {
	if len(s.msgs) == 0 {
		return io.EOF
	}
	proto.Merge(m.(*ordersv1.CreateOrderRequest), s.msgs[0])
	s.msgs = s.msgs[1:]
	return nil
}

func TestStreamValidatesEachMessage(t *testing.T) {
	p := newPolicy(t)
	ctx := policy.NewContext(context.Background(), &policy.Call{FullMethod: "/x/y"})
	ss := &recvStream{ctx: ctx, msgs: []*ordersv1.CreateOrderRequest{
		{Items: []*ordersv1.LineItem{{ProductId: "a", Quantity: 1}}},
		{}, // invalid: no items
	}}
	var received int
	err := p.StreamServerInterceptor()(nil, ss, &grpc.StreamServerInfo{}, func(_ any, s grpc.ServerStream) error {
		for {
			if err := s.RecvMsg(&ordersv1.CreateOrderRequest{}); err != nil {
				return err
			}
			received++
		}
	})
	if received != 1 {
		t.Errorf("handler got %d valid messages, want 1", received)
	}
	if got := violations(t, err); got["items"] != "repeated.min_items" {
		t.Errorf("second message: %v", got)
	}
}

// A policy refuses what it cannot place, never lets it through unchecked:
// a call without call facts, or a request that is not the method's decoded
// input (the decode step missing from the chain).
func TestRefusesWhatItCannotPlace(t *testing.T) {
	p := newPolicy(t)
	next := func(context.Context, any) (any, error) { t.Error("the handler ran"); return nil, nil }
	_, err := p.UnaryServerInterceptor()(context.Background(), &catalogv1.CreateProductRequest{}, &grpc.UnaryServerInfo{}, next)
	if status.Code(err) != codes.Internal {
		t.Errorf("no call facts: %v, want INTERNAL", err)
	}
	ctx := policy.NewContext(context.Background(), &policy.Call{FullMethod: "/catalog.v1.CatalogService/CreateProduct",
		Input: (&catalogv1.CreateProductRequest{}).ProtoReflect().Descriptor()})
	for name, req := range map[string]any{"bytes": []byte{1}, "another type": &catalogv1.GetProductRequest{}} {
		if _, err := p.UnaryServerInterceptor()(ctx, req, &grpc.UnaryServerInfo{}, next); status.Code(err) != codes.Internal {
			t.Errorf("%s: %v, want INTERNAL", name, err)
		}
	}
	err = p.StreamServerInterceptor()(nil, &recvStream{ctx: context.Background()}, &grpc.StreamServerInfo{},
		func(any, grpc.ServerStream) error { t.Error("the handler ran"); return nil })
	if status.Code(err) != codes.Internal {
		t.Errorf("stream without call facts: %v, want INTERNAL", err)
	}
}
