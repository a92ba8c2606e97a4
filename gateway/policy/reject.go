package policy

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every error the gateway
// makes itself, policies included.
const ErrorDomain = "gateway.portico.dev"

// PolicyKey is the ErrorInfo metadata key that names the policy which
// rejected a call ("auth", "ratelimit", "validation"), so stats can count
// rejections by policy and reason without parsing messages.
const PolicyKey = "policy"

// Reject returns a status error for a call a policy refuses: code, a
// message a person can act on, and an ErrorInfo with the reason, the policy
// and any extra metadata. More details (RetryInfo, BadRequest) may follow.
func Reject(code codes.Code, policyName, reason, msg string, meta map[string]string, details ...protoadapt.MessageV1) error {
	m := map[string]string{PolicyKey: policyName}
	for k, v := range meta {
		m[k] = v
	}
	return Error(code, reason, msg, m, details...)
}

// Error returns a gateway-made status error: the code, the message, an
// ErrorInfo in ErrorDomain with the reason and metadata, then details.
func Error(code codes.Code, reason, msg string, meta map[string]string, details ...protoadapt.MessageV1) error {
	st := status.New(code, msg)
	all := append([]protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: meta}}, details...)
	if withDetails, err := st.WithDetails(all...); err == nil {
		st = withDetails
	}
	return st.Err()
}

// Rejection reads back what Reject wrote: the policy and reason of a
// gateway-made error, or empty strings.
func Rejection(err error) (policyName, reason string) {
	st, ok := status.FromError(err)
	if !ok {
		return "", ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info.GetMetadata()[PolicyKey], info.GetReason()
		}
	}
	return "", ""
}

// NoCall is what a policy answers a call without a *Call in its context:
// INTERNAL, since only a wiring mistake (an interceptor used off the
// gateway's chain) gets there, and passing the call would skip the policy.
func NoCall(policyName string) error {
	return Reject(codes.Internal, policyName, ReasonInternal, policyName+": the call has no gateway call facts; is the policy on the gateway's chain?", nil)
}
