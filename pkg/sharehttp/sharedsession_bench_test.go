package sharehttp

import (
	"context"
	"errors"
	"testing"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// outputExecutor runs a command that writes size bytes in chunks of the
// size an exec stream delivers, then exits.
type outputExecutor struct {
	size int64
}

// execChunk is the output of one read of a PTY that a command writes to as
// fast as it can, as the exec stream delivers it.
const execChunk = 4 << 10

func (e *outputExecutor) Exec(ctx context.Context, _, _, _ string, _ []string, opts remotecommand.StreamOptions) error {
	chunk := make([]byte, execChunk)
	for i := range chunk {
		chunk[i] = 'a' + byte(i%26)
	}
	for left := e.size; left > 0; left -= int64(len(chunk)) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if _, err := opts.Stdout.Write(chunk[:min(left, int64(len(chunk)))]); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkSessionOutput measures the listener's own cost of moving a
// command's output to one page: exec stream in, WebSocket out, with the page
// acknowledging what it got in batches of 16 KiB, as share.js does. It
// reports the output carried by a data message on average.
func BenchmarkSessionOutput(b *testing.B) {
	f := newLinkFixture(b, nil)
	const size = 64 << 20
	f.server.exec = &outputExecutor{size: size}
	addr, _ := f.serve(b)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	var messages int64
	for b.Loop() {
		conn := dialSession(b, addr, f.token)
		var got, unacked int64
		for {
			_, m, err := conn.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
					b.Fatalf("the session ended with %v", err)
				}
				break
			}
			if len(m) > 0 && m[0] == wire.OpData {
				got += int64(len(m) - 1)
				unacked += int64(len(m) - 1)
				messages++
				if unacked >= 16<<10 {
					if err := conn.WriteMessage(websocket.BinaryMessage, wire.EncodeAck(uint32(unacked))); err != nil {
						b.Fatal(err)
					}
					unacked = 0
				}
			}
		}
		if got != size {
			b.Fatalf("the page got %d bytes, want %d", got, size)
		}
		conn.Close()
	}
	b.ReportMetric(float64(size)*float64(b.N)/float64(messages), "B/message")
}
