package policy

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Access says who may call a method.
type Access int

const (
	// Authenticated methods need a valid token or API key. It is the zero
	// value: a method that declares nothing is protected.
	Authenticated Access = iota
	// Public methods need no credentials.
	Public
)

func (a Access) String() string {
	if a == Public {
		return "public"
	}
	return "authenticated"
}

// ParseAccess reads "public" or "authenticated".
func ParseAccess(s string) (Access, error) {
	switch strings.ToLower(s) {
	case "public":
		return Public, nil
	case "authenticated":
		return Authenticated, nil
	}
	return 0, fmt.Errorf("access %q: want public or authenticated", s)
}

// RateLimit is a token bucket: Requests per Period sustained, bursts up to
// Burst. The zero value means no limit.
type RateLimit struct {
	Requests uint32        `yaml:"requests" json:"requests"`
	Period   time.Duration `yaml:"period" json:"period"`
	Burst    uint32        `yaml:"burst" json:"burst"`
}

// Enabled reports whether the limit admits a finite number of calls.
func (r RateLimit) Enabled() bool { return r.Requests > 0 && r.Period > 0 }

func (r RateLimit) String() string {
	if !r.Enabled() {
		return "none"
	}
	return fmt.Sprintf("%d/%s burst %d", r.Requests, r.Period, r.Burst)
}

// Policy is the effective policy of one method, after proto options and
// config overrides are merged. It is built once at start and never changes
// during a call.
type Policy struct {
	Access    Access
	Scopes    []string
	RateLimit RateLimit
}

// Transport is the door a call came through.
type Transport string

const (
	REST Transport = "rest"
	GRPC Transport = "grpc"
)

// Identity is a verified caller, set by the auth policy.
type Identity struct {
	// Consumer is the name the gateway knows the caller by: the API key's
	// or the client certificate's consumer, or the token's subject.
	Consumer string
	// Subject is the token's sub claim, the consumer for API keys, or the
	// client certificate's name (URI or DNS SAN) that matched.
	Subject string
	// Scopes granted to the caller.
	Scopes []string
	// Method is how the caller proved who they are: "jwt", "api_key" or
	// "client_certificate".
	Method string
}

// HasScope reports whether the identity was granted scope.
func (id *Identity) HasScope(scope string) bool {
	if id == nil {
		return false
	}
	for _, s := range id.Scopes {
		if s == scope {
			return true
		}
	}
	return false
}

// Call is what the chain knows about one call.
type Call struct {
	// FullMethod is /package.Service/Method.
	FullMethod string
	// Service is the full proto service name; Method the method name.
	Service, Method string
	// Backend is the Consul service that serves the method.
	Backend string
	// Policy is the method's effective policy.
	Policy *Policy
	// Transport is REST or GRPC.
	Transport Transport
	// Web: the call came as gRPC-Web or Connect, which the web door hands
	// to the gRPC door, so its Transport is GRPC.
	Web bool
	// Step is the composite step this call is, or nil for a client's own
	// call: the mark the composite put in the step's context (WithStep),
	// which the REST door's connection hands the chain's head in the
	// call's peer, so that nothing reads the context for it.
	Step *Step
	// HTTPRoute is the REST route template (GET /v1/products/{id}); empty
	// for native gRPC.
	HTTPRoute string
	// ClientIP is the client's address, after trusted proxies.
	ClientIP string
	// ClientCert is the leaf of the client's verified TLS certificate
	// chain, from either door; nil when the client presented none or it
	// did not verify. A certificate the handshake did not verify is never
	// put here, so a policy may take this one as proof.
	ClientCert *x509.Certificate
	// Incoming is the call's incoming metadata as its door gave it
	// (WithIncoming), which the chain's head found once so that nothing
	// after it walks the context for it (IncomingValue); nil when the door
	// gave none. Nobody may change it.
	Incoming metadata.MD
	// Identity is set by the auth policy; nil for anonymous calls.
	Identity *Identity
	// Input describes the method's request message.
	Input protoreflect.MessageDescriptor
	// PartialFailure, set by a composite method's handler, says which of
	// its optional steps failed; empty when none did.
	PartialFailure string

	// attempts counts the backend call's attempts: the backend
	// connection's balancer adds one for each instance it picks.
	attempts atomic.Int32
	// instance is the ID of the backend instance that answered, as stats
	// learns it from the backend call's peer.
	instance atomic.Pointer[string]
	// header is what the policies add to the call's response headers,
	// kept to go out in one write with the backend's (AddHeader).
	header metadata.MD
}

// AddHeader keeps md to send with a unary call's response headers. The
// proxy sends it with the backend's headers; the policy that added it
// sends what is left (TakeHeader) when the call ends without them.
// grpc-go copies all of a call's headers at each grpc.SetHeader, so one
// write instead of one per policy saves a copy of every header a call.
// A call's policies run one after another: no lock.
func (c *Call) AddHeader(md metadata.MD) {
	if c.header == nil {
		c.header = md
		return
	}
	addMD(c.header, md)
}

// TakeHeader returns what AddHeader kept, nil if nothing, and forgets it.
func (c *Call) TakeHeader() metadata.MD {
	md := c.header
	c.header = nil
	return md
}

// SendKeptHeader sends what AddHeader kept, if the call ended without the
// proxy's merging it (a refusal, a composite method), with grpc.SetHeader.
func (c *Call) SendKeptHeader(ctx context.Context) {
	if md := c.TakeHeader(); md != nil {
		_ = grpc.SetHeader(ctx, md)
	}
}

// MergeHeader adds what AddHeader kept to md, the backend's response
// headers (which the caller owns), and forgets it. md may be nil.
func (c *Call) MergeHeader(md metadata.MD) metadata.MD {
	kept := c.TakeHeader()
	if len(md) == 0 {
		return kept
	}
	addMD(md, kept)
	return md
}

// addMD adds from's keys and values to md, sharing a value slice when md
// has no such key (metadata.Join would copy every one).
func addMD(md, from metadata.MD) {
	for k, v := range from {
		if old, ok := md[k]; ok {
			md[k] = append(old[:len(old):len(old)], v...)
		} else {
			md[k] = v
		}
	}
}

// AddAttempt counts one more attempt of the call's backend call.
func (c *Call) AddAttempt() { c.attempts.Add(1) }

// Attempts is how many attempts the backend call has made.
func (c *Call) Attempts() int { return int(c.attempts.Load()) }

// SetInstance records id as the backend instance that answered the call.
func (c *Call) SetInstance(id *string) { c.instance.Store(id) }

// Instance is the ID of the backend instance that answered the call; ""
// when none did, or none is known.
func (c *Call) Instance() string {
	if id := c.instance.Load(); id != nil {
		return *id
	}
	return ""
}

type callKey struct{}

// NewContext returns ctx carrying c.
func NewContext(ctx context.Context, c *Call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

// FromContext returns the call in ctx. Every call that passes the gateway's
// chain has one.
func FromContext(ctx context.Context) (*Call, bool) {
	c, ok := ctx.Value(callKey{}).(*Call)
	return c, ok
}
