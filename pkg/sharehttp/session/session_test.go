package session

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"
)

// chunkReader returns its chunks one per Read, as far as p holds them, and
// records the size of the buffer of each call.
type chunkReader struct {
	chunks  [][]byte
	err     error
	bufSize []int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.bufSize = append(r.bufSize, len(p))
	if len(r.chunks) == 0 {
		return 0, r.err
	}
	n := copy(p, r.chunks[0])
	if r.chunks[0] = r.chunks[0][n:]; len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

func TestSessionReadFrom(t *testing.T) {
	boom := errors.New("boom")
	tuning := DefaultTuning()
	tests := []struct {
		name    string
		chunks  []int // sizes of the pieces the command's output comes in
		err     error // what the reader returns at the end
		wantErr error
		// wantBufs is the size of the buffer each Read is given: small
		// while the output comes in small pieces, the big pooled one
		// once a piece fills the small one, small again after a piece
		// smaller than QuietReadBytes.
		wantBufs []int
	}{
		{name: "idle: small pieces are read into the small buffer", chunks: []int{1, 100, tuning.IdleReadBytes - 1},
			err: io.EOF, wantBufs: []int{tuning.IdleReadBytes, tuning.IdleReadBytes, tuning.IdleReadBytes, tuning.IdleReadBytes}},
		{name: "busy: a full small buffer brings in the big one, a short read sends it back", chunks: []int{3 * tuning.IdleReadBytes, tuning.BusyReadBytes + 10, 5},
			err: io.EOF, wantBufs: []int{tuning.IdleReadBytes, tuning.BusyReadBytes, tuning.BusyReadBytes, tuning.BusyReadBytes, tuning.IdleReadBytes, tuning.IdleReadBytes}},
		{name: "busy: pieces of a PTY's size keep the big one", chunks: []int{3 * tuning.IdleReadBytes / 2, 3 * tuning.IdleReadBytes / 2, 3 * tuning.IdleReadBytes / 2, tuning.IdleReadBytes, 20},
			err: io.EOF, wantBufs: []int{tuning.IdleReadBytes, tuning.BusyReadBytes, tuning.BusyReadBytes, tuning.BusyReadBytes, tuning.BusyReadBytes, tuning.BusyReadBytes, tuning.IdleReadBytes}},
		{name: "the reader's error is returned after its output", chunks: []int{10, 4 * tuning.IdleReadBytes},
			err: boom, wantErr: boom, wantBufs: []int{tuning.IdleReadBytes, tuning.IdleReadBytes, tuning.BusyReadBytes, tuning.BusyReadBytes}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r0 := NewRegistry(tuning)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			hb := &Session{registry: r0, tuning: &r0.tuning, ctx: ctx, cancel: cancel, room: make(chan struct{}, 1), viewers: map[*Viewer]struct{}{}, log: newOutputLog(tuning.OutputLogBytes)}
			var all []byte
			r := &chunkReader{err: tt.err}
			for _, n := range tt.chunks {
				c := make([]byte, n)
				for i := range c {
					c[i] = byte(len(all) + i)
				}
				all = append(all, c...)
				r.chunks = append(r.chunks, c)
			}
			// io.Copy is how client-go's exec stream writes the output.
			n, err := io.Copy(output{hb}, r)
			if !errors.Is(err, tt.wantErr) || n != int64(len(all)) {
				t.Fatalf("copied %d bytes, %v; want %d, %v", n, err, len(all), tt.wantErr)
			}
			got := make([]byte, len(all))
			for off := 0; off < len(got); {
				off += hb.log.read(int64(off), got[off:])
			}
			if !bytes.Equal(got, all) {
				t.Errorf("the log holds other bytes than were read")
			}
			if !slices.Equal(r.bufSize, tt.wantBufs) {
				t.Errorf("read into buffers of %v, want %v", r.bufSize, tt.wantBufs)
			}
		})
	}
}
