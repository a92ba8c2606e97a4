package rest

import (
	"fmt"
	"net/http"

	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// limitBody refuses bodies over MaxBodyBytes: at once, with 413, when the
// request says its length, and otherwise when reading passes the limit
// (grpc-gateway then answers 400 with the reader's error). Without it a
// client could make the gateway hold any amount of JSON in memory.
func (d *Door) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > MaxBodyBytes {
			err := policy.Error(codes.ResourceExhausted, policy.ReasonBadRequest,
				fmt.Sprintf("request body of %d bytes is over the limit of %d", r.ContentLength, MaxBodyBytes), nil)
			d.refuse(r, "", unmatched, err, http.StatusRequestEntityTooLarge)
			writeStatus(w, status.Convert(err), http.StatusRequestEntityTooLarge, policy.SourceGateway)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		}
		next.ServeHTTP(w, r)
	})
}
