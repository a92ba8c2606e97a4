package validate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"buf.build/go/protovalidate"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/route"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// PolicyName names this policy in rejections and metrics.
const PolicyName = "validation"

// ReasonInvalid is the ErrorInfo reason of a rejected request.
const ReasonInvalid = "INVALID_REQUEST"

// Validator checks one message. protovalidate.Validator is one.
type Validator interface {
	Validate(msg proto.Message, opts ...protovalidate.ValidationOption) error
}

var _ Validator = (protovalidate.Validator)(nil)

// Option configures the policy.
type Option func(*options)

type options struct {
	messages  []protoreflect.MessageDescriptor
	validator Validator
}

// WithMessages compiles the rules of these request types when the policy is
// built, so the first call of each method pays nothing extra.
func WithMessages(mds ...protoreflect.MessageDescriptor) Option {
	return func(o *options) { o.messages = append(o.messages, mds...) }
}

// WithValidator replaces protovalidate (for tests).
func WithValidator(v Validator) Option { return func(o *options) { o.validator = v } }

// Policy validates requests. It is safe for concurrent use.
type Policy struct {
	v Validator
}

// New builds the validator once.
func New(opts ...Option) (*Policy, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.validator == nil {
		v, err := protovalidate.New(protovalidate.WithMessageDescriptors(o.messages...))
		if err != nil {
			return nil, fmt.Errorf("validate: compiling rules: %w", err)
		}
		o.validator = v
	}
	return &Policy{v: o.validator}, nil
}

// Check validates m and returns nil or an INVALID_ARGUMENT status error.
func (p *Policy) Check(m proto.Message) error {
	err := p.v.Validate(m)
	if err == nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		// A rule that cannot be evaluated is the gateway's fault, not the
		// caller's; say so without leaking the CEL program.
		return policy.Reject(codes.Internal, PolicyName, "RULE_ERROR", "request rules could not be evaluated", nil)
	}
	return rejection(verr)
}

func rejection(verr *protovalidate.ValidationError) error {
	br := &errdetails.BadRequest{}
	msgs := make([]string, 0, len(verr.Violations))
	for _, v := range verr.Violations {
		field := protovalidate.FieldPathString(v.Proto.GetField())
		rule := v.Proto.GetRuleId()
		text := v.Proto.GetMessage()
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       field,
			Description: text,
			Reason:      rule,
		})
		if field == "" {
			msgs = append(msgs, text)
		} else {
			msgs = append(msgs, field+": "+text)
		}
	}
	msg := "invalid request: " + strings.Join(msgs, "; ")
	return policy.Reject(codes.InvalidArgument, PolicyName, ReasonInvalid, msg, nil, br)
}

// ReadsRequests tells the chain to decode requests before this policy.
func (p *Policy) ReadsRequests() {}

// UnaryServerInterceptor validates the request of routed unary calls.
func (p *Policy) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		c, ok := policy.FromContext(ctx)
		if !ok {
			return nil, policy.NoCall(PolicyName)
		}
		if err := p.checkCall(c, req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor validates every message a client sends on a
// routed stream; the first invalid one ends the call.
func (p *Policy) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		c, ok := policy.FromContext(ss.Context())
		if !ok {
			return policy.NoCall(PolicyName)
		}
		return handler(srv, &stream{ServerStream: ss, p: p, c: c})
	}
}

type stream struct {
	grpc.ServerStream
	p *Policy
	c *policy.Call
}

func (s *stream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.p.checkCall(s.c, m)
}

// checkCall validates a request of the call c. A request that is not a
// decoded message of the method's input type means the decode step is not
// where it belongs: INTERNAL, never a request let through unchecked.
func (p *Policy) checkCall(c *policy.Call, msg any) error {
	m, ok := msg.(proto.Message)
	if !ok || (c.Input != nil && m.ProtoReflect().Descriptor().FullName() != c.Input.FullName()) {
		return policy.Reject(codes.Internal, PolicyName, policy.ReasonInternal,
			fmt.Sprintf("validation got a %T, not a decoded %s request", msg, inputName(c)), nil)
	}
	return p.Check(m)
}

// Config configures request validation.
type Config struct {
	// Disabled turns validation off (it is on by default: the rules are
	// part of each method's contract).
	Disabled bool `yaml:"disabled"`
}

// FromConfig builds the policy with every routed request type compiled up
// front; nil when validation is disabled.
func FromConfig(cfg Config, routes []*route.Route) (*Policy, error) {
	if cfg.Disabled {
		return nil, nil
	}
	mds := make([]protoreflect.MessageDescriptor, len(routes))
	for i, r := range routes {
		mds[i] = r.Input.Descriptor()
	}
	return New(WithMessages(mds...))
}

func inputName(c *policy.Call) string {
	if c.Input == nil {
		return "request"
	}
	return string(c.Input.FullName())
}
