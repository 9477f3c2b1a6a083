package wire

import (
	"fmt"
	"testing"
)

// encoded keeps results alive, so that the compiler cannot drop the work.
var encoded []byte

func BenchmarkEncodeData(b *testing.B) {
	for _, size := range []int{1, 4 << 10, 32 << 10} {
		p := make([]byte, size)
		b.Run(fmt.Sprintf("bytes=%d", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				encoded = EncodeData(p)
			}
		})
	}
}

func BenchmarkDecodeClient(b *testing.B) {
	for _, m := range []struct {
		name string
		msg  []byte
	}{
		{"data=1", EncodeData([]byte{'k'})},
		{"data=4096", EncodeData(make([]byte, 4096))},
		{"ack", EncodeAck(32 << 10)},
		{"resize", EncodeResize(Size{Cols: 120, Rows: 40})},
	} {
		b.Run(m.name, func(b *testing.B) {
			b.SetBytes(int64(len(m.msg)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeClient(m.msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
