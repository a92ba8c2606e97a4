package web

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// gRPC-Web's text mode (application/grpc-web-text) is the binary protocol
// in base64, for clients that cannot read binary responses. vanguard speaks
// only the binary mode, so the web part decodes the request body and
// encodes the response around it, as Envoy's grpc_web filter does.

const grpcWebText = "application/grpc-web-text"

// isGRPCWebText reports whether r uses gRPC-Web's text mode.
func isGRPCWebText(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), grpcWebText)
}

// fromGRPCWebText makes a text-mode request binary: its body decoded (a
// client may send several padded base64 chunks), its content types the
// binary ones. The body is read whole, within limit; over it, the request
// has no body and the decoded length as its ContentLength, for the caller
// to refuse.
func fromGRPCWebText(r *http.Request, limit int64) (*http.Request, error) {
	text, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(text)) > limit {
		// Over the limit: the length is what tells the caller so.
		r = r.Clone(r.Context())
		r.Body, r.ContentLength = http.NoBody, max(r.ContentLength, int64(len(text)))*3/4
		toBinary(r.Header)
		return r, nil
	}
	var body []byte
	for rest := bytes.TrimSpace(text); len(rest) > 0; {
		// A chunk ends after its padding, or at the end.
		end := bytes.IndexByte(rest, '=')
		if end < 0 {
			end = len(rest)
		}
		for end < len(rest) && rest[end] == '=' {
			end++
		}
		if body, err = base64.StdEncoding.AppendDecode(body, rest[:end]); err != nil {
			return nil, fmt.Errorf("gRPC-Web text body is not base64: %w", err)
		}
		rest = rest[end:]
	}
	r = r.Clone(r.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	toBinary(r.Header)
	return r, nil
}

// toBinary gives a text-mode request's Content-Type and Accept the binary
// mode's media types, keeping their +codec suffix and parameters.
func toBinary(h http.Header) {
	for _, k := range [...]string{"Content-Type", "Accept"} {
		if v := h.Get(k); strings.HasPrefix(v, grpcWebText) {
			h.Set(k, "application/grpc-web"+strings.TrimPrefix(v, grpcWebText))
		}
	}
}

// textWriter encodes a binary gRPC-Web answer in base64 for a text-mode
// client. Groups of three bytes are encoded as they come; the one or two
// bytes left over wait for more, or for the end, where they are padded.
type textWriter struct {
	http.ResponseWriter
	pending []byte
	encoded []byte // reused for each write's base64
}

func (t *textWriter) WriteHeader(code int) {
	h := t.Header()
	if ct := h.Get("Content-Type"); strings.HasPrefix(ct, "application/grpc-web") {
		h.Set("Content-Type", grpcWebText+strings.TrimPrefix(ct, "application/grpc-web"))
	}
	h.Del("Content-Length")
	t.ResponseWriter.WriteHeader(code)
}

func (t *textWriter) Write(b []byte) (int, error) {
	t.pending = append(t.pending, b...)
	whole := len(t.pending) / 3 * 3
	if whole == 0 {
		return len(b), nil
	}
	t.encoded = base64.StdEncoding.AppendEncode(t.encoded[:0], t.pending[:whole])
	if _, err := t.ResponseWriter.Write(t.encoded); err != nil {
		return 0, err
	}
	t.pending = append(t.pending[:0], t.pending[whole:]...)
	return len(b), nil
}

func (t *textWriter) Flush() {
	_ = http.NewResponseController(t.ResponseWriter).Flush()
}

func (t *textWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// finish writes what is left, padded.
func (t *textWriter) finish() {
	if len(t.pending) > 0 {
		_, _ = t.ResponseWriter.Write(base64.StdEncoding.AppendEncode(t.encoded[:0], t.pending))
		t.pending = nil
	}
}
