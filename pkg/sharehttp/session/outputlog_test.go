package session

import (
	"bytes"
	"testing"
)

func TestOutputLog(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		writes []int // sizes; the output is a running byte counter
		// want is the range of offsets the log holds afterwards.
		wantStart, wantEnd int64
		wantCap            int
	}{
		{name: "empty", max: 64, wantCap: 0},
		{name: "small writes stay small", max: 1 << 20, writes: []int{10, 20}, wantEnd: 30, wantCap: outputLogMinSize},
		{name: "grows by doubling", max: 1 << 20, writes: []int{3000, 3000, 3000}, wantEnd: 9000, wantCap: 16 << 10},
		{name: "never past max", max: 6000, writes: []int{5000, 5000}, wantStart: 4000, wantEnd: 10000, wantCap: 6000},
		{name: "wraps many times", max: outputLogMinSize, writes: []int{1000, 3000, 2500, 4096, 7}, wantStart: 10603 - outputLogMinSize, wantEnd: 10603, wantCap: outputLogMinSize},
		{name: "a write larger than max keeps its tail", max: outputLogMinSize, writes: []int{100, 3 * outputLogMinSize}, wantStart: 100 + 2*outputLogMinSize, wantEnd: 100 + 3*outputLogMinSize, wantCap: outputLogMinSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newOutputLog(tt.max)
			var all []byte
			for _, n := range tt.writes {
				p := make([]byte, n)
				for i := range p {
					p[i] = byte(len(all) + i)
				}
				all = append(all, p...)
				l.write(p)
			}
			if l.start != tt.wantStart || l.end != tt.wantEnd || len(l.buf) != tt.wantCap {
				t.Fatalf("holds [%d, %d) in %d bytes, want [%d, %d) in %d", l.start, l.end, len(l.buf), tt.wantStart, tt.wantEnd, tt.wantCap)
			}
			// Reading from every offset, in pieces of any size, gives
			// back what was written there.
			for _, piece := range []int{1, 7, 1000, 1 << 20} {
				for from := l.start; from < l.end; from += int64(max(97, piece/3)) {
					var got []byte
					for off := from; off < l.end; {
						p := make([]byte, piece)
						n := l.read(off, p)
						if n == 0 {
							t.Fatalf("read at %d returned nothing", off)
						}
						got = append(got, p[:n]...)
						off += int64(n)
					}
					if !bytes.Equal(got, all[from:]) {
						t.Fatalf("read from %d in pieces of %d differs from what was written", from, piece)
					}
				}
			}
			if n := l.read(l.start-1, make([]byte, 8)); l.start > 0 && n != 0 {
				t.Errorf("read before the start returned %d bytes", n)
			}
			if n := l.read(l.end, make([]byte, 8)); n != 0 {
				t.Errorf("read at the end returned %d bytes", n)
			}
		})
	}
}
