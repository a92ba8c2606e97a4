package web

import (
	"net/http"

	"github.com/portico-gw/portico/gateway/policy"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// writeError answers with a google.rpc.Status in JSON, as the REST door
// does, for what the web part refuses itself.
func writeError(w http.ResponseWriter, httpStatus int, err error) {
	body, _ := protojson.Marshal(status.Convert(err).Proto())
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Portico-Error-Source", policy.SourceGateway)
	w.WriteHeader(httpStatus)
	_, _ = w.Write(body)
}
