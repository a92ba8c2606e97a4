package compose

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/stats"
	rpccode "google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
)

// PartialFailureKey is the response metadata that names each optional step
// that failed: a header over REST (X-Portico-Partial-Failure), a trailer
// over gRPC. One value per step: "step=products code=UNAVAILABLE
// failed=10/10".
const PartialFailureKey = "x-portico-partial-failure"

// Reasons of the errors a composite call makes itself.
const (
	// ReasonStepFailed: a required step failed with an error that carried
	// no ErrorInfo (a backend's); its code is the step's.
	ReasonStepFailed = "STEP_FAILED"
	// ReasonExpression: an expression failed when evaluated (an index out of
	// range, a missing map key): the plan's mistake, INTERNAL.
	ReasonExpression = "COMPOSE_EXPRESSION"
	// ReasonTooManyItems: a for_each step's list is longer than its
	// max_items; the step called nothing. FAILED_PRECONDITION.
	ReasonTooManyItems = "COMPOSE_TOO_MANY_ITEMS"
)

// execution is one call of a composite method.
type execution struct {
	c    *Composer
	p    *plan
	in   proto.Message
	md   metadata.MD // the caller's metadata, as every step sends it
	vals []any       // each step's answer, once done

	mu      sync.Mutex
	err     error       // the first required step's failure
	errMD   metadata.MD // what its refusal tells the client to act on
	partial []string
	cancel  context.CancelFunc
}

// run serves one call: the steps, each as soon as the steps it reads have
// answered, then the response.
func (c *Composer) run(ctx context.Context, p *plan, req any) (any, error) {
	if c.conn == nil {
		return nil, policy.Error(codes.Internal, policy.ReasonInternal, "composite method served before Bind", nil)
	}
	in, err := decodeRequest(p, req)
	if err != nil {
		return nil, err
	}
	call, _ := policy.FromContext(ctx)
	x := &execution{c: c, p: p, in: in, md: stepMetadata(ctx), vals: make([]any, len(p.steps))}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	x.cancel = cancel
	done := make([]chan struct{}, len(p.steps))
	for i := range done {
		done[i] = make(chan struct{})
	}
	var wg sync.WaitGroup
	for i, s := range p.steps {
		wg.Go(func() {
			defer close(done[i])
			for _, n := range s.needs {
				select {
				case <-done[n]:
				case <-sctx.Done():
					return
				}
			}
			if sctx.Err() != nil {
				return // a required step failed
			}
			x.vals[i] = x.runStep(sctx, s)
		})
	}
	wg.Wait()
	if err := x.failure(); err != nil {
		if len(x.errMD) > 0 {
			// Trailers, as a refused call sends them; the REST door makes
			// them headers.
			_ = grpc.SetTrailer(ctx, x.errMD)
		}
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	v, _, err := p.response.Eval(x.activation(p.all, nil))
	if err != nil {
		return nil, x.exprError(ctx, nil, "response", err)
	}
	out, err := toMessage(v, p.route.Output)
	if err != nil {
		return nil, x.exprError(ctx, nil, "response", err)
	}
	if len(x.partial) > 0 {
		x.reportPartial(ctx, call)
	}
	return out, nil
}

// runStep runs one step and returns its answer. A failed step's answer is
// empty (a for_each step's keeps the calls that succeeded); a required
// step's failure is in x.err, and ends the composite call.
func (x *execution) runStep(ctx context.Context, s *step) any {
	if s.forEach == nil {
		reply, md, err := x.call(ctx, s, nil)
		if err != nil {
			x.stepFailed(s, err, md, 1, 1)
			return s.route.Output.New().Interface()
		}
		return reply
	}
	lv, _, err := s.forEach.Eval(x.activation(s.needs, nil))
	list, isList := lv.(traits.Lister)
	var size types.Int
	if isList {
		size, isList = list.Size().(types.Int)
	}
	if err == nil && !isList {
		// Checked to be a list at start; a value that is not one anyway is
		// the plan's failure, not a panic in a step's goroutine.
		err = fmt.Errorf("the value is a %T, not a list", lv)
	}
	if err != nil {
		x.stepFailed(s, x.exprError(ctx, s, "for_each", err), nil, 1, 1)
		return types.NewRefValList(x.p.adapter, nil)
	}
	n := int(size)
	if n > s.maxItems {
		x.stepFailed(s, policy.Error(codes.FailedPrecondition, ReasonTooManyItems,
			fmt.Sprintf("for_each has %d items, over the step's max_items of %d", n, s.maxItems), nil), nil, n, n)
		return types.NewRefValList(x.p.adapter, nil)
	}
	replies := make([]proto.Message, n)
	errs := make([]error, n)
	sem := make(chan struct{}, s.concurrency)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			errs[i] = status.FromContextError(ctx.Err()).Err()
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			var md metadata.MD
			replies[i], md, errs[i] = x.call(ctx, s, list.Get(types.Int(i)))
			if errs[i] != nil && !s.optional {
				x.stepFailed(s, errs[i], md, 1, n)
			}
		})
	}
	wg.Wait()
	var ok []ref.Val
	var first error
	failed := 0
	for i, r := range replies {
		if errs[i] != nil {
			failed++
			first = cmpFirst(first, errs[i])
			continue
		}
		ok = append(ok, x.p.adapter.NativeToValue(r))
	}
	if failed > 0 && s.optional {
		x.stepFailed(s, first, nil, failed, n)
	}
	return types.NewRefValList(x.p.adapter, ok)
}

func cmpFirst(first, err error) error {
	if first == nil {
		return err
	}
	return first
}

// call makes one call of a step's method: its request built, then sent
// through the in-process connection into the method's bound chain, where
// the caller's credentials meet auth, its address the rate limits, and
// the request validation, as if the caller had made the call. A failed
// call's md is what its refusal tells the client to act on (Retry-After,
// RateLimit-*, WWW-Authenticate).
func (x *execution) call(ctx context.Context, s *step, item ref.Val) (_ proto.Message, md metadata.MD, _ error) {
	rv, _, err := s.request.Eval(x.activation(s.needs, item))
	if err != nil {
		return nil, nil, x.exprError(ctx, s, "request", err)
	}
	req, err := toMessage(rv, s.route.Input)
	if err != nil {
		return nil, nil, x.exprError(ctx, s, "request", err)
	}
	reply := s.route.Output.New().Interface()
	var header, trailer metadata.MD
	sctx := metadata.NewOutgoingContext(policy.WithStep(ctx, s.mark), x.md)
	if err := x.c.conn.Invoke(sctx, s.route.FullMethod, req, reply, grpc.Header(&header), grpc.Trailer(&trailer)); err != nil {
		md = proxy.RefusalMetadata(header, trailer)
		if len(trailer.Get(policy.ErrorSourceKey)) > 0 && trailer.Get(policy.ErrorSourceKey)[0] == policy.SourceBackend {
			return nil, md, &policy.BackendError{Status: status.Convert(err)}
		}
		return nil, md, err
	}
	return reply, nil, nil
}

// exprError is an expression's failure as the caller sees it: INTERNAL,
// COMPOSE_EXPRESSION, and a fixed message that names the expression (the
// step's, as stepError prefixes it). CEL's own words, which can quote the
// plan and the data the steps answered, go to the gateway's log only.
func (x *execution) exprError(ctx context.Context, s *step, expr string, err error) error {
	attrs := []slog.Attr{slog.String("method", x.p.route.FullMethod[1:]), slog.String("expression", expr), slog.String("error", err.Error())}
	if s != nil {
		attrs = append(attrs, slog.String("step", s.name))
	}
	x.c.logger.LogAttrs(ctx, slog.LevelError, "compose: an expression failed", attrs...)
	return policy.Error(codes.Internal, ReasonExpression, "the "+expr+" expression failed; the gateway's log has why", nil)
}

// stepFailed records a step's failure: failed of n calls. A required
// step's first failure ends the composite call with that step's error and
// its refusal's metadata (md).
func (x *execution) stepFailed(s *step, err error, md metadata.MD, failed, n int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if s.optional {
		x.partial = append(x.partial, fmt.Sprintf("step=%s code=%s failed=%d/%d", s.name, rpccode.Code_name[int32(status.Code(err))], failed, n))
		return
	}
	if x.err == nil {
		x.err, x.errMD = stepError(s, err), md
		x.cancel()
	}
}

func (x *execution) failure() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.err
}

// activation is what an expression sees: the request, the answers of the
// steps it reads and, in a for_each step's request, the item.
func (x *execution) activation(needs []int, item ref.Val) map[string]any {
	act := make(map[string]any, len(needs)+2)
	act["request"] = x.in
	for _, n := range needs {
		act[x.p.steps[n].name] = x.vals[n]
	}
	if item != nil {
		act["item"] = item
	}
	return act
}

// reportPartial says which optional steps failed: a header over REST, a
// trailer over gRPC, and the composite's access log line.
func (x *execution) reportPartial(ctx context.Context, call *policy.Call) {
	md := metadata.MD{PartialFailureKey: x.partial}
	if call != nil {
		call.PartialFailure = strings.Join(x.partial, ", ")
		if call.Transport == policy.REST {
			_ = grpc.SetHeader(ctx, md)
			return
		}
	}
	_ = grpc.SetTrailer(ctx, md)
}

// stepError is a required step's failure as the composite's: the step's
// code and message, prefixed with the step, and its ErrorInfo (or a new
// one, STEP_FAILED) naming the step and its method. Who made the error
// stays as the step's call said: the gateway, or the backend.
func stepError(s *step, err error) error {
	pb := status.Convert(err).Proto()
	pb.Message = fmt.Sprintf("step %q (%s): %s", s.name, s.route.FullMethod[1:], pb.GetMessage())
	found := false
	for i, d := range pb.GetDetails() {
		info := &errdetails.ErrorInfo{}
		if d.MessageIs(info) && d.UnmarshalTo(info) == nil {
			if info.Metadata == nil {
				info.Metadata = map[string]string{}
			}
			info.Metadata["step"], info.Metadata["step_method"] = s.name, s.route.FullMethod[1:]
			if a, err := anypb.New(info); err == nil {
				pb.Details[i], found = a, true
			}
			break
		}
	}
	if !found {
		info := &errdetails.ErrorInfo{Reason: ReasonStepFailed, Domain: policy.ErrorDomain,
			Metadata: map[string]string{"step": s.name, "step_method": s.route.FullMethod[1:]}}
		if a, err := anypb.New(info); err == nil {
			pb.Details = append([]*anypb.Any{a}, pb.Details...)
		}
	}
	st := status.FromProto(pb)
	if policy.ErrorSource(err) == policy.SourceBackend {
		return &policy.BackendError{Status: st}
	}
	return st.Err()
}

// decodeRequest is the composite's request as its generated type: as the
// REST door or the decode step made it, or decoded from the bytes received.
func decodeRequest(p *plan, req any) (proto.Message, error) {
	if m, ok := req.(proto.Message); ok && m.ProtoReflect().Descriptor() == p.route.Input.Descriptor() {
		return m.ProtoReflect().Interface(), nil
	}
	data, err := proxy.Codec().Marshal(req)
	if err != nil {
		return nil, policy.Error(codes.Internal, policy.ReasonInternal, "the request cannot be read", nil)
	}
	defer data.Free()
	msg := p.route.Input.New().Interface()
	if err := proto.Unmarshal(data.Materialize(), msg); err != nil {
		return nil, policy.Error(codes.InvalidArgument, policy.ReasonBadRequest,
			fmt.Sprintf("request is not a valid %s: %v", p.route.Input.Descriptor().FullName(), err), nil)
	}
	return msg, nil
}

// toMessage is an expression's value as the generated type mt: CEL builds
// messages as dynamicpb, which the chain's interceptors and the REST door
// would not take for the method's own type.
func toMessage(v ref.Val, mt protoreflect.MessageType) (proto.Message, error) {
	m, ok := v.Value().(proto.Message)
	if !ok {
		return nil, fmt.Errorf("the value is a %s, not a message", v.Type().TypeName())
	}
	if _, dyn := m.(*dynamicpb.Message); !dyn && m.ProtoReflect().Descriptor() == mt.Descriptor() {
		return m, nil
	}
	if m.ProtoReflect().Descriptor().FullName() != mt.Descriptor().FullName() {
		return nil, fmt.Errorf("the value is a %s, not a %s", m.ProtoReflect().Descriptor().FullName(), mt.Descriptor().FullName())
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	out := mt.New().Interface()
	if err := proto.Unmarshal(b, out); err != nil {
		return nil, err
	}
	return out, nil
}

// stepMetadata is the metadata every step of a call sends: the header
// rule's (proxy.StepMetadata), and the composite's span as the parent of
// the steps' spans.
func stepMetadata(ctx context.Context) metadata.MD {
	md := proxy.StepMetadata(ctx)
	stats.InjectTrace(ctx, md)
	return md
}
