package rest

import (
	"fmt"
	"net/http"

	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// limitBody refuses, before routing, a body larger than any route takes:
// at once, with 413, when the request says its length. A route's own limit
// applies once it has matched (early.go); a body without a length meets it
// while it is read (grpc-gateway then answers 400 with the reader's error).
// Without it a client could make the gateway hold any amount of JSON.
func (d *Door) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > d.maxBody {
			d.tooLarge(w, r, "", unmatched, d.maxBody)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, d.maxBody)
		}
		next.ServeHTTP(w, r)
	})
}

func (d *Door) tooLarge(w http.ResponseWriter, r *http.Request, method, route string, limit int64) {
	err := policy.Error(codes.ResourceExhausted, policy.ReasonBadRequest,
		fmt.Sprintf("request body of %d bytes is over the limit of %d", r.ContentLength, limit), nil)
	d.refuse(r, method, route, err, http.StatusRequestEntityTooLarge)
	writeStatus(w, status.Convert(err), http.StatusRequestEntityTooLarge, policy.SourceGateway)
}

// limitHeaders refuses a request with more header fields than the edge
// allows, with 431, before anything reads them. (Their size is capped by
// the server itself: net/http answers 431 past MaxHeaderBytes.)
func (d *Door) limitHeaders(next http.Handler) http.Handler {
	if d.cfg.MaxHeaders <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := 0
		for _, vs := range r.Header {
			n += len(vs)
		}
		if n > d.cfg.MaxHeaders {
			err := policy.Error(codes.ResourceExhausted, policy.ReasonBadRequest,
				fmt.Sprintf("%d request headers are over the limit of %d", n, d.cfg.MaxHeaders), nil)
			if d.cfg.OnRefuse != nil {
				d.cfg.OnRefuse("too_many_headers")
			}
			d.refuse(r, "", unmatched, err, http.StatusRequestHeaderFieldsTooLarge)
			w.Header().Set("Connection", "close")
			writeStatus(w, status.Convert(err), http.StatusRequestHeaderFieldsTooLarge, policy.SourceGateway)
			return
		}
		next.ServeHTTP(w, r)
	})
}
