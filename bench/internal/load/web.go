package load

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"time"

	"google.golang.org/protobuf/proto"
)

// The browser protocols' unary calls, as front-end clients send them:
// Connect (binary protobuf, Content-Type application/proto) and gRPC-Web
// (binary, application/grpc-web+proto), over HTTP/1.1 keep-alive. Framed by
// hand, as the REST client writes its requests by hand: the figures are
// the server's.

// Web protocols.
const (
	Connect = "connect"
	GRPCWeb = "grpc-web"
)

// WebClient makes Connect or gRPC-Web unary calls.
type WebClient struct {
	base, protocol string
	client         *http.Client
}

// NewWeb is a client of protocol for base (http://host:port) keeping up to
// conns idle HTTP/1.1 connections.
func NewWeb(base, protocol string, conns int) *WebClient {
	t := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, DisableCompression: true, IdleConnTimeout: time.Minute}
	return &WebClient{base: base, protocol: protocol, client: &http.Client{Transport: t, Timeout: 10 * time.Second}}
}

// Close drops the idle connections.
func (c *WebClient) Close() { c.client.CloseIdleConnections() }

// Call makes w's request, a unary one, and decodes the reply.
func (c *WebClient) Call(w Workload) Call {
	body, err := proto.Marshal(w.request)
	if err != nil {
		panic(err)
	}
	contentType := "application/proto"
	if c.protocol == GRPCWeb {
		contentType = "application/grpc-web+proto"
		body = append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(body))), body...)
	}
	url := c.base + w.method
	return func(ctx context.Context, _ int) error {
		if w.stream {
			return fmt.Errorf("%s: %s streams are not measured", w.Name, c.protocol)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("X-Api-Key", APIKey)
		if c.protocol == Connect {
			req.Header.Set("Connect-Protocol-Version", "1")
		} else {
			req.Header.Set("X-Grpc-Web", "1")
		}
		resp, err := c.client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s %s: %s: %.200s", c.protocol, w.method, resp.Status, raw)
		}
		msg := raw
		if c.protocol == GRPCWeb {
			if msg, err = grpcWebMessage(raw); err != nil {
				return fmt.Errorf("%s %s: %w", c.protocol, w.method, err)
			}
		}
		return proto.Unmarshal(msg, w.reply())
	}
}

// grpcWebMessage is the message of a gRPC-Web answer (a data frame, then
// the trailers frame), or the error its trailers report.
func grpcWebMessage(raw []byte) ([]byte, error) {
	var msg []byte
	for len(raw) >= 5 {
		flag, n := raw[0], int(binary.BigEndian.Uint32(raw[1:5]))
		if len(raw) < 5+n {
			break
		}
		frame := raw[5 : 5+n]
		raw = raw[5+n:]
		if flag&0x80 == 0 {
			msg = frame
			continue
		}
		if !bytes.Contains(bytes.ToLower(frame), []byte("grpc-status: 0")) {
			return nil, fmt.Errorf("trailers %q", frame)
		}
		return msg, nil
	}
	return nil, fmt.Errorf("no trailers in the answer")
}
