package rest

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"slices"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Marshaler is the door's JSON marshaler: protojson with every field
// written and unknown fields refused, and a stream's final error chunk
// written as the bare google.rpc.Status. Package web wraps it for SSE.
// What it writes and reads is what grpc-gateway's runtime.JSONPb with those
// options would (TestMarshalMatchesGRPCGateway,
// TestBodyDecoderMatchesGRPCGateway), at less cost, but that it refuses a
// unary body with more after its JSON value (trailingData).
func Marshaler() runtime.Marshaler {
	return &statusChunks{Marshaler: &runtime.HTTPBodyMarshaler{
		Marshaler: &runtime.JSONPb{
			MarshalOptions: protojsonAll,
			// Unknown fields are errors: a misspelt field must not be
			// dropped silently.
			UnmarshalOptions: protojsonStrict,
		},
	}}
}

// statusChunks is the door's JSON marshaler over grpc-gateway's: it writes
// grpc-gateway's stream error chunk as the status it holds, encodes a
// message into one buffer and decodes a unary call's body in one pass.
type statusChunks struct{ runtime.Marshaler }

func (m *statusChunks) Marshal(v any) ([]byte, error) {
	switch v := v.(type) {
	case *httpbody.HttpBody:
		return m.Marshaler.Marshal(v) // its data, as it is
	case proto.Message:
		// The bytes runtime.JSONPb writes, without its copy of them into a
		// bytes.Buffer and the buffer's growth from empty: 7 of a
		// response's 24 allocations for a product.
		return protojsonAll.MarshalAppend(make([]byte, 0, jsonBufferSize), v)
	}
	if st := ErrorChunk(v); st != nil {
		return statusJSON.Marshal(st)
	}
	return m.Marshaler.Marshal(v)
}

// jsonBufferSize is the room a response's JSON starts with.
const jsonBufferSize = 512

// A unary call's JSON body is read whole and handed to protojson once.
// grpc-gateway's JSON decoder reads it with encoding/json first, into a
// json.RawMessage that protojson then parses again: in the profile of a
// REST CreateProduct that first pass was about 5% of the gateway's CPU.
// Only a unary route's body is read whole (early.go marks it): a stream's
// decoder reads one message at a time as the client sends them.
//
// The answer is grpc-gateway's in every case but one. A body that protojson
// takes whole is one JSON value, which is all grpc-gateway would have read
// of it, decoded into an empty message (a handler's is new). Anything else
// (empty, a read error, trailing data, a syntax error, a body field that is
// not a message) goes to grpc-gateway's decoder, over the same bytes
// followed by the same read error, and gets its answer and its error text;
// except that a body with more after its JSON value, which grpc-gateway
// takes and drops the rest of, is refused (trailingData).

// unaryBody is the request body of a unary REST call.
type unaryBody struct {
	io.ReadCloser
	size int64 // the request's Content-Length; -1 when unknown
}

// NewDecoder reads a unary call's body whole; any other with the
// marshaler's own decoder.
func (m *statusChunks) NewDecoder(r io.Reader) runtime.Decoder {
	if b, ok := r.(*unaryBody); ok {
		return &bodyDecoder{body: b, marshaler: m.Marshaler}
	}
	return m.Marshaler.NewDecoder(r)
}

type bodyDecoder struct {
	body      *unaryBody
	marshaler runtime.Marshaler
	next      runtime.Decoder // grpc-gateway's, once the body is read and it has to answer
	done      bool            // the body was read and decoded whole
}

func (d *bodyDecoder) Decode(v any) error {
	switch {
	case d.next != nil:
		return d.next.Decode(v)
	case d.done:
		return io.EOF // the one value was the whole body
	}
	data, err := readBody(d.body, d.body.size)
	if m := messageOf(v); err == nil && m != nil && proto.Size(m) == 0 && len(bytes.TrimSpace(data)) > 0 {
		if wholeBody.Unmarshal(data, m) == nil {
			d.done = true
			return nil
		}
		// protojson leaves what it decoded before the error; grpc-gateway's
		// decoder may fail before protojson runs.
		proto.Reset(m)
	}
	d.next = d.marshaler.NewDecoder(Replay(data, err))
	if err := d.next.Decode(v); err != nil {
		return err
	}
	return trailingData(d.next, data)
}

// trailingData refuses a unary body with more after its JSON value.
// grpc-gateway's decoder reads one value and leaves the rest unread, so
// {"name":"a"}{"name":"b"} would create "a" and drop "b" without a word;
// like a misspelt field (protojsonStrict), it is the caller's mistake.
func trailingData(dec runtime.Decoder, data []byte) error {
	dw, ok := dec.(runtime.DecoderWrapper)
	if !ok {
		return nil
	}
	at := min(int(dw.InputOffset()), len(data))
	if rest := bytes.TrimLeft(data[at:], " \t\r\n"); len(rest) > 0 {
		return fmt.Errorf("request body has more after its JSON value, at byte %d: a call takes one value", len(data)-len(rest))
	}
	return nil
}

// wholeBody is protojsonStrict for the one pass, with half its message
// depth. grpc-gateway's encoding/json pass refuses a body nested more than
// 10,000 objects and arrays deep, and each message adds at most two (its
// object and a list or map field's), so a body wholeBody takes is one
// grpc-gateway takes too; a deeper one goes to grpc-gateway's decoder.
var wholeBody = func() protojson.UnmarshalOptions {
	o := protojsonStrict
	o.RecursionLimit = 5000
	return o
}()

// messageOf is the message a decode into v fills, as grpc-gateway finds it:
// v itself, or for a body field of message type the field, set to a new
// message when nil (grpc-gateway sets it before reading, so an empty body
// leaves an empty message, not none). Nil for anything else.
func messageOf(v any) proto.Message {
	if m, ok := v.(proto.Message); ok {
		return m
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return nil
	}
	field := rv.Elem()
	if field.Kind() != reflect.Pointer || !field.Type().Implements(messageType) {
		return nil
	}
	if field.IsNil() {
		field.Set(reflect.New(field.Type().Elem()))
	}
	return field.Interface().(proto.Message)
}

var messageType = reflect.TypeFor[proto.Message]()

// readBody reads r to its end into one buffer of size bytes when the size
// is known (and one more, to see the end), up to bodyBufferMax: the size
// is what the request claims, and beyond that the buffer grows with the
// bytes that come, as grpc-gateway's decoder's does.
func readBody(r io.Reader, size int64) ([]byte, error) {
	b := make([]byte, 0, min(max(size, 0), bodyBufferMax)+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			grown := 2 * cap(b)
			if size >= int64(len(b)) {
				grown = min(grown, int(size)+1)
			}
			b = slices.Grow(b, grown-len(b))
		}
	}
}

// bodyBufferMax is the largest buffer a body is read into before its
// bytes come.
const bodyBufferMax = 64 << 10

// Replay reads data, which a read of a request body ended with err, and
// then fails with err (nil: ends), so the reader it is handed to meets what
// reading the body itself would have.
func Replay(data []byte, err error) io.Reader {
	if err == nil {
		return bytes.NewReader(data)
	}
	return io.MultiReader(bytes.NewReader(data), errReader{err})
}

// errReader fails every read with err.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
