package edge

import (
	"math/rand/v2"
	"net"
	"testing"

	"golang.org/x/net/http2"
)

// replayConn reads the same bytes over and over, and writes nowhere.
type replayConn struct {
	net.Conn
	in []byte
}

func (c replayConn) Read(p []byte) (int, error) { return copy(p, c.in), nil }
func (replayConn) Write(p []byte) (int, error)  { return len(p), nil }

// BenchmarkGuard is the guard's cost on a busy connection, per read of the
// client's frames and write of grpc-go's: the client's are small (HEADERS
// and RST_STREAM pairs, a frame header every 12 bytes, resets under the
// limit: the worst case), grpc-go's are a mix of sizes. It allocates
// nothing.
func BenchmarkGuard(b *testing.B) {
	in := flood(b, 1, 400)
	out := serverFrames(b, rand.New(rand.NewPCG(1, 1)), 30).buf.Bytes()
	c := (&resetGuard{limit: 1 << 62, window: resetWindow, linger: goAwayLinger, onFlood: func() {}}).conn(replayConn{in: in})
	c.preface = len(http2.ClientPreface) // read: the same frames, again and again
	buf := make([]byte, len(in))
	b.SetBytes(int64(len(in) + len(out)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(800+30, "frames/op")
}
