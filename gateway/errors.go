package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of errors the gateway makes.
const ErrorDomain = policy.ErrorDomain

// ErrorSourceKey is the trailer (gRPC) and header (REST, as
// X-Portico-Error-Source) that says who made an error: "gateway" or
// "backend".
const ErrorSourceKey = "x-portico-error-source"

// Reasons of gateway-made errors, in google.rpc.ErrorInfo.reason.
const (
	ReasonNoHealthyBackend = "NO_HEALTHY_BACKEND"
	ReasonDeadline         = "DEADLINE_EXCEEDED"
	ReasonBadRequest       = "BAD_REQUEST"
	ReasonNoRoute          = "NO_ROUTE"
	ReasonShuttingDown     = "SHUTTING_DOWN"
	ReasonInternal         = "INTERNAL"
)

// Error returns a gateway-made status error with an ErrorInfo detail
// (policy.Error; policies use policy.Reject, which also names the policy).
func Error(code codes.Code, reason, msg string, meta map[string]string) error {
	return policy.Error(code, reason, msg, meta)
}

// backendError marks an error that a backend sent, so the chain does not
// take it for the gateway's own.
type backendError struct{ st *status.Status }

func (e *backendError) Error() string              { return e.st.Err().Error() }
func (e *backendError) GRPCStatus() *status.Status { return e.st }

// errorSourceUnary is the outermost interceptor: it marks every failed call
// with who made the error, and gives gateway-made errors an ErrorInfo.
func errorSourceUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		err = markError(ctx, nil, err)
	}
	return resp, err
}

func errorSourceStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	if err != nil {
		err = markError(ss.Context(), ss, err)
	}
	return err
}

func markError(ctx context.Context, ss grpc.ServerStream, err error) error {
	source := "gateway"
	var be *backendError
	if errors.As(err, &be) {
		source = "backend"
	} else {
		err = withErrorInfo(err)
	}
	md := metadata.Pairs(ErrorSourceKey, source)
	if ss != nil {
		ss.SetTrailer(md)
	} else {
		_ = grpc.SetTrailer(ctx, md)
	}
	return err
}

// withErrorInfo adds an ErrorInfo to a gateway-made status that lacks one.
func withErrorInfo(err error) error {
	st := status.Convert(err)
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.ErrorInfo); ok {
			return err
		}
	}
	reason := ReasonInternal
	switch st.Code() {
	case codes.InvalidArgument:
		reason = ReasonBadRequest
	case codes.NotFound, codes.Unimplemented:
		reason = ReasonNoRoute
	case codes.DeadlineExceeded:
		reason = ReasonDeadline
	case codes.Unavailable:
		reason = ReasonNoHealthyBackend
	case codes.Canceled:
		return err
	}
	return Error(st.Code(), reason, st.Message(), nil)
}

// restErrorHandler is the one place where gRPC codes become HTTP statuses.
// The body is google.rpc.Status as JSON.
func restErrorHandler(ctx context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	source := "gateway"
	md, ok := runtime.ServerMetadataFromContext(ctx)
	if ok {
		if v := md.TrailerMD.Get(ErrorSourceKey); len(v) > 0 {
			source = v[0]
		}
		// A rejected call often answers trailers-only: what a policy set as
		// headers (Retry-After, WWW-Authenticate) arrives as trailers.
		forwardHeaders(w.Header(), md.HeaderMD)
		forwardHeaders(w.Header(), md.TrailerMD)
	}
	var httpErr *runtime.HTTPStatusError
	if errors.As(err, &httpErr) {
		err = httpErr.Err
	}
	if source == "gateway" {
		err = withErrorInfo(err)
	}
	st := status.Convert(err)
	writeStatus(w, st, runtime.HTTPStatusFromCode(st.Code()), source)
}

// restRoutingErrorHandler answers requests that match no route.
func restRoutingErrorHandler(ctx context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	var err error
	switch httpStatus {
	case http.StatusNotFound:
		err = Error(codes.NotFound, ReasonNoRoute, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path), nil)
	case http.StatusMethodNotAllowed:
		err = Error(codes.Unimplemented, ReasonNoRoute, fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path), nil)
	default:
		err = Error(codes.InvalidArgument, ReasonBadRequest, http.StatusText(httpStatus), nil)
	}
	writeStatus(w, status.Convert(err), httpStatus, "gateway")
}

var statusJSON = protojson.MarshalOptions{}

func writeStatus(w http.ResponseWriter, st *status.Status, httpStatus int, source string) {
	body, err := statusJSON.Marshal(st.Proto())
	if err != nil {
		body = []byte(`{"code":13,"message":"failed to encode error"}`)
		httpStatus = http.StatusInternalServerError
	}
	h := w.Header()
	h.Del("Trailer")
	h.Set("Content-Type", "application/json")
	h.Set("X-Portico-Error-Source", source)
	w.WriteHeader(httpStatus)
	_, _ = w.Write(body)
}

// forwardHeaders copies response metadata that a REST client should see
// (x-* keys, such as x-instance-id) as plain HTTP headers.
func forwardHeaders(h http.Header, md metadata.MD) {
	for k, vs := range md {
		if name, ok := outgoingHeader(k); ok {
			for _, v := range vs {
				h.Add(name, v)
			}
		}
	}
}

// outgoingHeader maps response metadata to HTTP header names: x-* keys
// keep their names, other keys get grpc-gateway's Grpc-Metadata- prefix.
func outgoingHeader(key string) (string, bool) {
	key = strings.ToLower(key)
	switch {
	case key == ErrorSourceKey, key == "content-type", strings.HasPrefix(key, "grpc-"):
		// Hop metadata of the in-memory gRPC leg, not the client's business.
		return "", false
	case strings.HasPrefix(key, "x-"), key == "www-authenticate", key == "retry-after", strings.HasPrefix(key, "ratelimit"):
		// Headers a REST client acts on keep their HTTP names.
		return http.CanonicalHeaderKey(key), true
	default:
		return runtime.MetadataHeaderPrefix + key, true
	}
}

// incomingHeader forwards x-* and trace context headers as metadata under
// their own names, and everything else as grpc-gateway does by default.
func incomingHeader(key string) (string, bool) {
	k := strings.ToLower(key)
	if strings.HasPrefix(k, identityPrefix) {
		// The gateway's own keys (identity, internal hop facts) are never
		// taken from a client.
		return "", false
	}
	if strings.HasPrefix(k, "x-") || k == "traceparent" || k == "tracestate" {
		// W3C Trace Context keeps its names, so tracing reads it from REST
		// and gRPC alike and a backend sees what a gRPC caller would send.
		return k, true
	}
	return runtime.DefaultHeaderMatcher(key)
}
