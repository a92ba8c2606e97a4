package validate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"buf.build/go/protovalidate"
	"github.com/portico-gw/portico/gateway/policy"
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

// Check validates msg and returns nil or an INVALID_ARGUMENT status error.
func (p *Policy) Check(msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil
	}
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

// UnaryServerInterceptor validates the request of routed unary calls.
func (p *Policy) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if _, routed := policy.FromContext(ctx); routed {
			if err := p.Check(req); err != nil {
				return nil, err
			}
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor validates every message a client sends on a
// routed stream; the first invalid one ends the call.
func (p *Policy) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if _, routed := policy.FromContext(ss.Context()); !routed {
			return handler(srv, ss)
		}
		return handler(srv, &stream{ServerStream: ss, p: p})
	}
}

type stream struct {
	grpc.ServerStream
	p *Policy
}

func (s *stream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.p.Check(m)
}
