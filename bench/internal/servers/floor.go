package servers

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"

	"github.com/portico-gw/portico/bench/internal/procs"
	"github.com/portico-gw/portico/gen/registry"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Floor is the least a gRPC proxy built on grpc-go can do: a grpc.Server
// whose handlers pass each message on as the bytes received, to one
// grpc.ClientConn to the backend, copying request metadata forward and
// response metadata back. No policy, no routing, no measuring, no
// discovery, no retries: what it costs per call is grpc-go's server and
// client transports, which every Go gateway on grpc-go pays (Portico's
// own gRPC door is built of the same parts). It runs with what Portico
// sets that changes grpc-go's cost: the worker pool and fixed flow-control
// windows (and, as every proxy of the harness, Portico's GC target).
func Floor(ctx context.Context, backendAddr, readyPath string) error {
	conn, err := grpc.NewClient(backendAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(bytesCodec{})),
		grpc.WithInitialWindowSize(floorWindow), grpc.WithInitialConnWindowSize(floorWindow))
	if err != nil {
		return err
	}
	defer conn.Close()
	srv := grpc.NewServer(grpc.ForceServerCodecV2(bytesCodec{}),
		grpc.InitialWindowSize(floorWindow), grpc.InitialConnWindowSize(floorWindow),
		grpc.NumStreamWorkers(uint32(max(64, 16*runtime.GOMAXPROCS(0)))))
	for _, s := range registry.Services() {
		srv.RegisterService(floorService(s.Descriptor, conn), nil)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()
	return ready(ctx, readyPath, procs.Ready{GRPC: l.Addr().String()})
}

// floorWindow is Portico's fixed HTTP/2 flow-control window (gateway.go),
// which turns grpc-go's bandwidth-delay pings off.
const floorWindow = 1 << 20

// floorService forwards every method of sd to conn.
func floorService(sd protoreflect.ServiceDescriptor, conn *grpc.ClientConn) *grpc.ServiceDesc {
	desc := &grpc.ServiceDesc{ServiceName: string(sd.FullName()), HandlerType: (*any)(nil)}
	for i := range sd.Methods().Len() {
		m := sd.Methods().Get(i)
		full := "/" + string(sd.FullName()) + "/" + string(m.Name())
		if !m.IsStreamingClient() && !m.IsStreamingServer() {
			desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: string(m.Name()),
				Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
					in := new(frame)
					if err := dec(in); err != nil {
						return nil, err
					}
					md, _ := metadata.FromIncomingContext(ctx)
					var header, trailer metadata.MD
					out := new(frame)
					err := conn.Invoke(metadata.NewOutgoingContext(ctx, md), full, in, out,
						grpc.Header(&header), grpc.Trailer(&trailer))
					_ = grpc.SetHeader(ctx, header)
					_ = grpc.SetTrailer(ctx, trailer)
					if err != nil {
						return nil, err
					}
					return out, nil
				}})
			continue
		}
		sdesc := &grpc.StreamDesc{ServerStreams: m.IsStreamingServer(), ClientStreams: m.IsStreamingClient()}
		desc.Streams = append(desc.Streams, grpc.StreamDesc{StreamName: string(m.Name()),
			ServerStreams: sdesc.ServerStreams, ClientStreams: sdesc.ClientStreams,
			Handler: func(_ any, ss grpc.ServerStream) error { return floorStream(ss, conn, sdesc, full) }})
	}
	return desc
}

// floorStream forwards one stream, client messages in a goroutine of
// their own as any bidirectional proxy must.
func floorStream(ss grpc.ServerStream, conn *grpc.ClientConn, desc *grpc.StreamDesc, method string) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	md, _ := metadata.FromIncomingContext(ctx)
	cs, err := conn.NewStream(metadata.NewOutgoingContext(ctx, md), desc, method)
	if err != nil {
		return err
	}
	go func() {
		for {
			in := new(frame)
			if err := ss.RecvMsg(in); err != nil {
				if errors.Is(err, io.EOF) {
					_ = cs.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := cs.SendMsg(in); err != nil {
				return
			}
		}
	}()
	header, err := cs.Header()
	if err == nil {
		_ = ss.SetHeader(header)
	}
	out := new(frame)
	for {
		if err := cs.RecvMsg(out); err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(out); err != nil {
			return err
		}
	}
}

// frame is one message as its bytes, held from grpc-go's pooled buffers
// and handed back to it when sent, as Portico's proxy codec does.
type frame struct{ data mem.BufferSlice }

type bytesCodec struct{}

func (bytesCodec) Name() string { return "proto" }

func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, errors.New("floor: not a frame")
	}
	data := f.data
	f.data = nil
	return data, nil
}

func (bytesCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return errors.New("floor: not a frame")
	}
	data.Ref()
	f.data = data
	return nil
}
