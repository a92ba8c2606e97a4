package web

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/vanguard"
	"github.com/portico-gw/portico/gateway/chain"
	"github.com/portico-gw/portico/gateway/clientip"
	"github.com/portico-gw/portico/gateway/edge"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/rest"
	"github.com/portico-gw/portico/gateway/route"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"
)

// rpc serves gRPC-Web (binary and text) and the Connect protocol (unary
// and streaming, JSON and binary) on the REST port. vanguard transcodes a
// call into gRPC and hands it to the gateway's grpc.Server (its ServeHTTP),
// so it meets the chain a native gRPC call meets: auth, rate limits,
// validation, stats, the error model. Only calls to routed services are
// taken; REST stays with the REST door.
type rpc struct {
	transcoder *vanguard.Transcoder
	services   map[string]bool
	routes     map[string]*route.Route // by path, /pkg.Service/Method
	refusals   []chain.Refusals
	trusted    clientip.Trusted
	logger     *slog.Logger
}

// frameSlack is what gRPC-Web's and Connect streaming's framing add to a
// request body beyond its message: the envelope and an end-of-stream frame.
const frameSlack = 64

func newRPC(o Options) (*rpc, error) {
	target := tapped(o.Edge, o.GRPC)
	r := &rpc{services: map[string]bool{}, routes: map[string]*route.Route{}, refusals: o.Refusals, trusted: o.Trusted, logger: o.Logger}
	buffer := map[string]int64{} // by service: the largest message vanguard holds
	for _, rt := range o.Routes {
		r.services[rt.Service] = true
		r.routes[rt.FullMethod] = rt
		buffer[rt.Service] = max(buffer[rt.Service], rt.MaxBodyBytes, rest.MaxBodyBytes)
	}
	var services []*vanguard.Service
	for _, svc := range slices.Sorted(maps.Keys(buffer)) {
		services = append(services, vanguard.NewService(svc, target,
			vanguard.WithMaxMessageBufferBytes(uint32(min(buffer[svc], math.MaxUint32)))))
	}
	var err error
	r.transcoder, err = vanguard.NewTranscoder(services, vanguard.WithDefaultServiceOptions(
		vanguard.WithTargetProtocols(vanguard.ProtocolGRPC),
		vanguard.WithTargetCodecs(vanguard.CodecProto),
	))
	return r, err
}

func (p *rpc) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.takes(r) {
			next.ServeHTTP(w, r)
			return
		}
		// A route's body limit, as the REST door applies it: vanguard
		// reads a unary call's body before the chain runs.
		rt := p.routes[r.URL.Path]
		limit := int64(rest.MaxBodyBytes)
		if rt != nil {
			limit = rt.MaxBodyBytes
		}
		limit += frameSlack
		if isGRPCWebText(r) {
			text, err := fromGRPCWebText(r, limit*4/3+4)
			if err != nil {
				p.logger.Info("gRPC-Web text body refused", "method", r.URL.Path, "err", err)
				r = p.refuse(r, rt, policy.Error(codes.InvalidArgument, policy.ReasonBadRequest, "the gRPC-Web text body is not base64", nil))
			} else {
				r = text
			}
			tw := &textWriter{ResponseWriter: w}
			defer tw.finish()
			w = tw
		}
		if r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody && (rt == nil || !rt.ClientStreams) {
			// A body without a length, of a call that sends one message:
			// read it here, within the limit, so that a body over it
			// meets the refusal below rather than a read error that
			// vanguard would answer UNAVAILABLE. vanguard would buffer
			// it whole anyway.
			var over bool
			if r, over = readWithin(r, limit); over {
				r = p.refuse(r, rt, policy.Error(codes.ResourceExhausted, policy.ReasonBadRequest,
					fmt.Sprintf("request body is over the limit of %d", limit-frameSlack), nil))
			}
		}
		switch {
		case r.ContentLength > limit:
			r = p.refuse(r, rt, policy.Error(codes.ResourceExhausted, policy.ReasonBadRequest,
				fmt.Sprintf("request body of %d bytes is over the limit of %d", r.ContentLength, limit-frameSlack), nil))
		case r.Body != nil && r.Body != http.NoBody:
			// A client stream's body meets the limit as it is read.
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		p.transcoder.ServeHTTP(w, r)
	})
}

// readWithin reads r's body, up to limit+1 bytes; over the limit it says
// so, for the caller to refuse.
func readWithin(r *http.Request, limit int64) (*http.Request, bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err == nil && int64(len(body)) > limit {
		return r, true
	}
	r = r.Clone(r.Context())
	r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	if err != nil {
		// The client went away or broke the framing: vanguard meets the
		// same error reading the rest.
		r.Body, r.ContentLength = io.NopCloser(rest.Replay(body, err)), -1
	}
	return r, false
}

// A call refused before vanguard reads it (a body over the limit, text
// that is not base64) still goes through vanguard, with an empty message
// for a body and the refusal in its context: the gRPC target answers with
// the error, which vanguard writes in the caller's protocol (Connect's
// JSON error, gRPC-Web's trailers), details included.
type refusalKey struct{}

// The refusal is counted (stats) as the REST door counts its own.
func (p *rpc) refuse(r *http.Request, rt *route.Route, err error) *http.Request {
	c := &policy.Call{Transport: policy.GRPC, ClientIP: p.trusted.FromRemote(r.RemoteAddr, r.Header.Values("X-Forwarded-For"))}
	if rt != nil {
		c.FullMethod, c.Service, c.Method, c.Backend, c.Policy = rt.FullMethod, rt.Service, rt.Method, rt.Backend, rt.Policy
	}
	for _, ref := range p.refusals {
		ref.Refused(r.Context(), c, err, 0)
	}
	r = r.WithContext(context.WithValue(r.Context(), refusalKey{}, err))
	toBinary(r.Header)
	var body []byte
	ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	if strings.HasSuffix(ct, "json") {
		body = []byte("{}")
	}
	if strings.HasPrefix(ct, "application/grpc-web") || strings.HasPrefix(ct, "application/connect+") {
		body = append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(body))), body...)
	}
	r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	return r
}

// takes reports whether r is a gRPC-Web or Connect call to a routed
// service: /pkg.Service/Method with gRPC-Web's or Connect's content type,
// or a Connect unary GET (?connect=v1).
func (p *rpc) takes(r *http.Request) bool {
	svc, _, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if !ok || !p.services[svc] {
		return false
	}
	ct := r.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/grpc-web"), strings.HasPrefix(ct, "application/connect+"):
		return r.Method == http.MethodPost
	case r.Method == http.MethodGet:
		return r.URL.Query().Get("connect") == "v1"
	}
	base, _, _ := strings.Cut(ct, ";")
	return r.Method == http.MethodPost && r.Header.Get("Connect-Protocol-Version") != "" &&
		(base == "application/json" || base == "application/proto")
}

// tapped answers a call refused before vanguard read it (refuse), and
// applies the edge's tap to the others, as grpc-go applies it
// to a native one on the gRPC listener: the deadline the caller asked for
// (grpc-timeout, which vanguard sets from Connect-Timeout-Ms) is cut to the
// route's maximum, and a caller who asked for none gets the route's
// timeout. The result goes back into grpc-timeout: grpc.Server.ServeHTTP
// takes the request's own context ending for the client going away, and
// would then write no status.
func tapped(e *edge.Edge, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err, ok := r.Context().Value(refusalKey{}).(error); ok {
			writeGRPCError(w, err)
			return
		}
		r = r.WithContext(chain.WebContext(r.Context()))
		if e == nil {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if d, ok := grpcTimeout(r.Header.Get("Grpc-Timeout")); ok {
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		md := metadata.MD{}
		for k, vs := range r.Header {
			md[strings.ToLower(k)] = vs
		}
		ctx, err := e.Tap(ctx, &tap.Info{FullMethodName: r.URL.Path, Header: md})
		if err != nil {
			writeGRPCError(w, err)
			return
		}
		if dl, ok := ctx.Deadline(); ok {
			r.Header.Set("Grpc-Timeout", encodeTimeout(time.Until(dl)))
		}
		next.ServeHTTP(w, r)
	})
}

// encodeTimeout writes a grpc-timeout value: at most 8 digits, in the
// finest unit that holds d, rounded up.
func encodeTimeout(d time.Duration) string {
	if d <= 0 {
		return "1n"
	}
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}} {
		if n := (d + u.unit - 1) / u.unit; n <= 99999999 {
			return strconv.FormatInt(int64(n), 10) + u.name
		}
	}
	return strconv.FormatInt(int64((d+time.Hour-1)/time.Hour), 10) + "H"
}

// grpcTimeout reads a grpc-timeout value: up to 8 digits and a unit.
func grpcTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// writeGRPCError answers a gRPC request with a trailers-only error, which
// vanguard turns into the caller's protocol.
// The gateway made the error, as the chain's trailers would say.
func writeGRPCError(w http.ResponseWriter, err error) {
	st := status.Convert(policy.WithErrorInfo(err))
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set(policy.ErrorSourceKey, policy.SourceGateway)
	h.Set("Grpc-Status", strconv.Itoa(int(st.Code())))
	h.Set("Grpc-Message", url.PathEscape(st.Message()))
	if b, err := proto.Marshal(st.Proto()); err == nil {
		h.Set("Grpc-Status-Details-Bin", base64.RawStdEncoding.EncodeToString(b))
	}
	w.WriteHeader(http.StatusOK)
}
