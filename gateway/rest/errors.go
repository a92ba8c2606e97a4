package rest

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/policy"
	"github.com/portico-gw/portico/gateway/proxy"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// errorHandler writes every error of a routed REST call as google.rpc.Status
// JSON, with the HTTP status policy.HTTPStatus gives its code. An error
// the chain did not mark (JSON that does not parse, a path parameter of the
// wrong type) was refused before the chain, so it is counted here.
func (d *Door) errorHandler(ctx context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	source := ""
	if md, ok := runtime.ServerMetadataFromContext(ctx); ok {
		if v := md.TrailerMD.Get(policy.ErrorSourceKey); len(v) > 0 {
			source = v[0]
		}
		proxy.ForwardHeaders(w.Header(), md.HeaderMD, d.conn.outgoing)
		proxy.ForwardTrailers(w.Header(), md.TrailerMD)
	}
	var httpErr *runtime.HTTPStatusError
	if errors.As(err, &httpErr) {
		err = httpErr.Err
	}
	chainRan := source != ""
	if p := pendingFrom(ctx); p != nil && p.resumed {
		// Inside the chain (early.go): its outer half counts the call and
		// marks its source once this returns, so the source is known from
		// the inner half's error; a body that did not decode is the
		// gateway's answer, and the outer half's result.
		chainRan, source = true, policy.SourceGateway
		if p.invoked {
			source = policy.ErrorSource(p.err)
		} else {
			p.err = err
		}
	}
	if !chainRan || source == policy.SourceGateway {
		source = policy.SourceGateway
		err = policy.WithErrorInfo(err)
	}
	st := status.Convert(err)
	httpStatus := policy.HTTPStatus(st.Code())
	if !chainRan {
		method, route := callOf(ctx, r)
		d.refuse(r, method, route, err, httpStatus)
	}
	writeStatus(w, st, httpStatus, source)
}

// callOf is the method and route of the call in ctx: a unary call's
// binding, or what grpc-gateway's handler annotated.
func callOf(ctx context.Context, r *http.Request) (method, route string) {
	if p := pendingFrom(ctx); p != nil {
		return p.b.method.Route().FullMethod, p.b.route
	}
	method, _ = runtime.RPCMethod(ctx)
	route = unmatched
	if pattern, ok := runtime.HTTPPathPattern(ctx); ok {
		route = r.Method + " " + pattern
	}
	return method, route
}

// routingErrorHandler answers requests that match no route: 404 for an
// unknown path, 405 for a known path with another method.
func (d *Door) routingErrorHandler(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	var err error
	switch httpStatus {
	case http.StatusNotFound:
		err = policy.Error(codes.NotFound, policy.ReasonNoRoute, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path), nil)
	case http.StatusMethodNotAllowed:
		err = policy.Error(codes.Unimplemented, policy.ReasonNoRoute, fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path), nil)
	default:
		err = policy.Error(codes.InvalidArgument, policy.ReasonBadRequest, http.StatusText(httpStatus), nil)
	}
	d.refuse(r, "", unmatched, err, httpStatus)
	writeStatus(w, status.Convert(err), httpStatus, policy.SourceGateway)
}

// refuse tells the policies that account for refusals (stats) about a
// request refused before the chain.
func (d *Door) refuse(r *http.Request, method, route string, err error, httpStatus int) {
	if len(d.cfg.Refusals) == 0 {
		return
	}
	c := &policy.Call{FullMethod: method, Transport: policy.REST, HTTPRoute: route, ClientIP: d.clientIP(r)}
	if m, ok := d.cfg.Methods[method]; ok {
		rt := m.Route()
		c.Service, c.Method, c.Backend, c.Policy = rt.Service, rt.Method, rt.Backend, rt.Policy
	} else {
		c.FullMethod = ""
	}
	for _, ref := range d.cfg.Refusals {
		ref.Refused(r.Context(), c, err, httpStatus)
	}
}

var statusJSON = protojson.MarshalOptions{}

// WriteError answers with err as a google.rpc.Status in JSON, the
// gateway's own answer, as the door writes its refusals; for what wraps
// the door and refuses before it (package web).
func WriteError(w http.ResponseWriter, httpStatus int, err error) {
	writeStatus(w, status.Convert(err), httpStatus, policy.SourceGateway)
}

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
