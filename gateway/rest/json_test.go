package rest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	gwruntime "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/portico-gw/portico/gateway/chain"
	"github.com/portico-gw/portico/gateway/proxy"
	"github.com/portico-gw/portico/gateway/route"
	catalogv1 "github.com/portico-gw/portico/gen/catalog/v1"
	"google.golang.org/genproto/googleapis/api/httpbody"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// bodies are request bodies of every kind the decoder meets: good, empty,
// malformed, with trailing data, unknown fields, invalid UTF-8.
var bodies = []string{
	`{"sku":"ABC-1","name":"A product","price":100,"currency":"EUR","stock":1}`,
	"  \n{\"name\":\"spaced\"}\n\t ",
	``,
	" \n ",
	`{}`,
	`null`,
	`[]`,
	`"a string"`,
	`{"name":"first"}{"name":"second"}`,
	`{"name":"first"} trailing`,
	`{"name":"unterminated"`,
	`{"name":}`,
	`{"nmae":"misspelt"}`,
	`{"name":"a","name":"duplicate"}`,
	"{\"name\":\"\xff\xfe\"}",
	`{"price":"not a number"}`,
	`{"price":1e400}`,
	`{"stock":-0}`,
	`{"name":"\u2028 escaped"}`,
}

// trailing are the bodies with more after their first JSON value.
var trailing = map[string]bool{
	`{"name":"first"}{"name":"second"}`: true,
	`{"name":"first"} trailing`:         true,
}

// TestBodyDecoderMatchesGRPCGateway decodes each body with the door's
// decoder and with grpc-gateway's, and wants the same messages and the same
// error text from both, also when the body fails to read after its bytes;
// but for a body with trailing data, which the door refuses.
// Each decoder is called four times in a row, as a stream's would be: into
// a message field (body "product") and then into a message (body "*"),
// twice each.
func TestBodyDecoderMatchesGRPCGateway(t *testing.T) {
	readErr := errors.New("http: request body too large")
	for _, body := range bodies {
		for _, failing := range []bool{false, true} {
			reader := func() io.Reader {
				if failing {
					return io.MultiReader(strings.NewReader(body), iotest.ErrReader(readErr))
				}
				return strings.NewReader(body)
			}
			m := Marshaler()
			theirs := m.(*statusChunks).Marshaler.NewDecoder(reader())
			ours := m.NewDecoder(&unaryBody{ReadCloser: io.NopCloser(reader()), size: int64(len(body))})
			if _, ok := ours.(*bodyDecoder); !ok {
				t.Fatalf("the door's decoder of a unary body is a %T", ours)
			}
			var wantField, gotField catalogv1.CreateProductRequest
			var wantMsg, gotMsg catalogv1.Product
			for _, step := range []struct {
				name        string
				theirs, our any
			}{
				{"field", &wantField.Product, &gotField.Product},
				{"message", &wantMsg, &gotMsg},
			} {
				name := step.name + " of " + strings.ReplaceAll(body, "\n", `\n`)
				if failing {
					name += ", then a read error"
				}
				// The decoders are called again, as a stream would: the
				// second call sees what grpc-gateway's would.
				for call := range 2 {
					errTheirs := theirs.Decode(step.theirs)
					errOurs := ours.Decode(step.our)
					if step.name == "field" && call == 0 && trailing[body] {
						// The one answer of the door's own: grpc-gateway
						// takes the first value and drops the rest.
						if errTheirs != nil || errOurs == nil || !strings.Contains(errOurs.Error(), "more after its JSON value") {
							t.Errorf("%s: error %v, want the trailing data refused (grpc-gateway's %v)", name, errOurs, errTheirs)
						}
						continue
					}
					if errString(errTheirs) != errString(errOurs) {
						t.Errorf("%s, call %d: error %q, grpc-gateway's %q", name, call, errString(errOurs), errString(errTheirs))
					}
				}
				if !proto.Equal(wantField.Product, gotField.Product) || (wantField.Product == nil) != (gotField.Product == nil) ||
					!proto.Equal(&wantMsg, &gotMsg) {
					t.Errorf("%s: decoded %v %v, grpc-gateway %v %v", name, gotField.Product, &gotMsg, wantField.Product, &wantMsg)
				}
			}
		}
	}
}

// TestBodyDecoderOtherTargets: a body field that is not a message (a map,
// a scalar, a list) is grpc-gateway's to decode.
func TestBodyDecoderOtherTargets(t *testing.T) {
	var labels map[string]string
	d := Marshaler().NewDecoder(&unaryBody{ReadCloser: io.NopCloser(strings.NewReader(`{"a":"b"}`)), size: -1})
	if err := d.Decode(&labels); err != nil || labels["a"] != "b" {
		t.Fatalf("map body: %v, %v", labels, err)
	}
	var n int32
	d = Marshaler().NewDecoder(&unaryBody{ReadCloser: io.NopCloser(strings.NewReader(`7`)), size: 1})
	if err := d.Decode(&n); err != nil || n != 7 {
		t.Fatalf("scalar body: %v, %v", n, err)
	}
	// A well-known type is a message like any other.
	var v structpb.Value
	d = Marshaler().NewDecoder(&unaryBody{ReadCloser: io.NopCloser(strings.NewReader(`[1,"x"]`)), size: 7})
	if err := d.Decode(&v); err != nil || len(v.GetListValue().GetValues()) != 2 {
		t.Fatalf("Value body: %v, %v", &v, err)
	}
	// A stream's body keeps grpc-gateway's decoder, which reads one
	// message at a time.
	if _, ok := Marshaler().NewDecoder(strings.NewReader("{}")).(gwruntime.DecoderWrapper); !ok {
		t.Fatal("a body not marked unary did not get grpc-gateway's decoder")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func BenchmarkBodyDecoder(b *testing.B) {
	body := bodies[0]
	m := Marshaler()
	for _, tc := range []struct {
		name string
		dec  func() gwruntime.Decoder
	}{
		{"grpc-gateway", func() gwruntime.Decoder { return m.(*statusChunks).Marshaler.NewDecoder(strings.NewReader(body)) }},
		{"door", func() gwruntime.Decoder {
			return m.NewDecoder(&unaryBody{ReadCloser: io.NopCloser(strings.NewReader(body)), size: int64(len(body))})
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var req catalogv1.CreateProductRequest
				if err := tc.dec().Decode(&req.Product); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMarshalMatchesGRPCGateway: the door's marshaler writes what
// grpc-gateway's would, for messages, a google.api.HttpBody, a stream's
// chunks and values that are not messages; only the error chunk is its
// own (the bare status).
func TestMarshalMatchesGRPCGateway(t *testing.T) {
	m := Marshaler()
	theirs := m.(*statusChunks).Marshaler
	product := &catalogv1.Product{Id: "prd-1", Name: "A \"product\" \u2028", Sku: "ABC-1", Price: 100, Currency: "EUR", Stock: 3}
	list := &catalogv1.ListProductsResponse{}
	for range 40 {
		list.Products = append(list.Products, product) // past the first buffer
	}
	value, _ := structpb.NewValue(map[string]any{"a": []any{1, "x", nil}})
	for _, v := range []any{
		&catalogv1.GetProductResponse{Product: product},
		&catalogv1.GetProductResponse{},
		list,
		value,
		&httpbody.HttpBody{ContentType: "text/plain", Data: []byte("raw")},
		map[string]any{"result": product},
		"a string",
		int64(7),
	} {
		got, err := m.Marshal(v)
		want, werr := theirs.Marshal(v)
		if err != nil || werr != nil || !bytes.Equal(got, want) {
			t.Errorf("%T: wrote %s (%v), grpc-gateway %s (%v)", v, got, err, want, werr)
		}
	}
	st := &spb.Status{Code: 5, Message: "gone"}
	got, err := m.Marshal(map[string]proto.Message{"error": st})
	var back spb.Status
	if err != nil || protojson.Unmarshal(got, &back) != nil || !proto.Equal(&back, st) {
		t.Errorf("error chunk: %s, %v", got, err)
	}
}

func BenchmarkMarshal(b *testing.B) {
	resp := &catalogv1.GetProductResponse{Product: &catalogv1.Product{Id: "prd-1", Name: "A product", Sku: "ABC-1", Price: 100, Currency: "EUR", Stock: 3}}
	m := Marshaler()
	for _, tc := range []struct {
		name string
		m    gwruntime.Marshaler
	}{{"grpc-gateway", m.(*statusChunks).Marshaler}, {"door", m}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.m.Marshal(resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestBodyDecoderDeepNesting: a body of a recursive message nested deeper
// than encoding/json reads (10,000 levels of objects and arrays) is
// refused as grpc-gateway refuses it, also where the message depth is
// within protojson's limit (one message per two levels: {"kids":[{...}]}).
func TestBodyDecoderDeepNesting(t *testing.T) {
	file, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("node.proto"), Package: proto.String("test"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Node"),
			Field: []*descriptorpb.FieldDescriptorProto{{
				Name: proto.String("kids"), JsonName: proto.String("kids"), Number: proto.Int32(1),
				Label: descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum(),
				Type:  descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(), TypeName: proto.String(".test.Node"),
			}},
		}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	node := file.Messages().Get(0)
	for _, depth := range []int{4999, 5000, 5001, 6000} {
		body := strings.Repeat(`{"kids":[`, depth) + strings.Repeat(`]}`, depth)
		want, got := dynamicpb.NewMessage(node), dynamicpb.NewMessage(node)
		m := Marshaler()
		errTheirs := m.(*statusChunks).Marshaler.NewDecoder(strings.NewReader(body)).Decode(want)
		errOurs := m.NewDecoder(&unaryBody{ReadCloser: io.NopCloser(strings.NewReader(body)), size: int64(len(body))}).Decode(got)
		if errString(errTheirs) != errString(errOurs) || !proto.Equal(want, got) {
			t.Errorf("%d messages deep: error %q, grpc-gateway's %q", depth, errString(errOurs), errString(errTheirs))
		}
	}
}

// TestBodyBufferClaimedLength: the buffer a unary body is read into grows
// with the bytes that come, not with the length the request claims: a
// client that says 4 MiB and sends two bytes does not make the gateway
// hold 4 MiB (as grpc-gateway's decoder does not).
func TestBodyBufferClaimedLength(t *testing.T) {
	d := catalogDoor(t, func(r *route.Route) *proxy.Method {
		return proxy.New(r, nil, proxy.AsBytes, proxy.WithHandler(func(context.Context, any) (any, error) {
			return &catalogv1.CreateProductResponse{}, nil
		}))
	}, func(c *Config, tbl *route.Table) { c.Chain = chain.New(chain.Config{Routes: tbl}) })
	srv := httptest.NewServer(d)
	defer srv.Close()
	send := func() {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := fmt.Fprintf(c, "POST /v1/products HTTP/1.1\r\nHost: door\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{}", MaxBodyBytes); err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).CloseWrite() // the rest never comes
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	send() // the connection pools and the door's first-call state
	const calls = 8
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range calls {
		send()
	}
	runtime.ReadMemStats(&after)
	perCall := (after.TotalAlloc - before.TotalAlloc) / calls
	t.Logf("%d bytes allocated per call that claimed %d and sent 2", perCall, MaxBodyBytes)
	if perCall > MaxBodyBytes/8 {
		t.Errorf("%d bytes allocated per call for a body of 2 bytes", perCall)
	}
}
