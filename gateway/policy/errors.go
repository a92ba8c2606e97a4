package policy

import (
	"errors"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The error model, on both doors: an error the gateway makes carries a
// google.rpc.ErrorInfo in ErrorDomain with one of the reasons below, and
// every failed call says who made its error in ErrorSourceKey. Errors a
// backend sent pass through unchanged (BackendError). Over REST the code
// becomes an HTTP status in HTTPStatus, and nowhere else.

// ErrorSourceKey is the trailer (gRPC) and header (REST, as
// X-Portico-Error-Source) that says who made an error: SourceGateway or
// SourceBackend.
const ErrorSourceKey = "x-portico-error-source"

// Values of ErrorSourceKey.
const (
	SourceGateway = "gateway"
	SourceBackend = "backend"
)

// Reasons of gateway-made errors, in google.rpc.ErrorInfo.reason. Policies
// add their own (auth, rate limiting, validation).
const (
	// ReasonNoHealthyBackend: no instance of the backend could be reached.
	ReasonNoHealthyBackend = "NO_HEALTHY_BACKEND"
	// ReasonBackendUnreachable: the connection to the instance broke
	// during the call (reset, EOF); the backend did not answer.
	ReasonBackendUnreachable = "BACKEND_UNREACHABLE"
	ReasonDeadline           = "DEADLINE_EXCEEDED"
	// ReasonBadRequest: the request is not a message of the method's type
	// (bad JSON, bytes that do not decode, a body over the limit).
	ReasonBadRequest = "BAD_REQUEST"
	ReasonNoRoute    = "NO_ROUTE"
	// ReasonRequestTimeout: a stream's first request message did not
	// arrive within the edge's read limit.
	ReasonRequestTimeout = "REQUEST_TIMEOUT"
	ReasonShuttingDown   = "SHUTTING_DOWN"
	ReasonInternal       = "INTERNAL"
)

// BackendError marks a status that a backend sent, so that the chain passes
// it on as the backend's and does not take it for the gateway's own.
type BackendError struct{ Status *status.Status }

func (e *BackendError) Error() string              { return e.Status.Err().Error() }
func (e *BackendError) GRPCStatus() *status.Status { return e.Status }

// ErrorSource says who made err: SourceBackend for a BackendError,
// SourceGateway for anything else.
func ErrorSource(err error) string {
	var be *BackendError
	if errors.As(err, &be) {
		return SourceBackend
	}
	return SourceGateway
}

// WithErrorInfo gives a gateway-made status that lacks an ErrorInfo one,
// with the reason its code implies. CANCELED is the client's own doing and
// stays bare.
func WithErrorInfo(err error) error {
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

// HTTPStatus is the one mapping of gRPC codes to HTTP statuses: the REST
// door's answers and the access log's status both come from here. It is
// grpc-gateway's mapping, the one REST clients of gRPC services know.
func HTTPStatus(code codes.Code) int { return runtime.HTTPStatusFromCode(code) }
