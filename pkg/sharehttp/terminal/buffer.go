package terminal

import (
	"io"
	"sync"
)

// InputBuffer holds typed input on its way to a command. It is bounded: when
// full, Write waits, and so whoever writes is held back (the connection is
// not read, and TCP pushes back on the page).
type InputBuffer struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    []byte
	max    int
	closed bool
}

// NewInputBuffer returns an empty buffer that holds up to max bytes.
func NewInputBuffer(max int) *InputBuffer {
	b := &InputBuffer{max: max}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// Write adds p, waiting while the buffer is full. It fails with
// io.ErrClosedPipe once the buffer is closed.
func (b *InputBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	written := 0
	for len(p) > 0 {
		for len(b.buf) >= b.max && !b.closed {
			b.cond.Wait()
		}
		if b.closed {
			return written, io.ErrClosedPipe
		}
		n := min(len(p), b.max-len(b.buf))
		b.buf = append(b.buf, p[:n]...)
		p = p[n:]
		written += n
		b.cond.Broadcast()
	}
	return written, nil
}

// Read takes buffered input, waiting for some; io.EOF once the buffer is
// closed and empty.
func (b *InputBuffer) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.buf) == 0 && !b.closed {
		b.cond.Wait()
	}
	if len(b.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	if len(b.buf) == 0 {
		b.buf = nil
	}
	b.cond.Broadcast()
	return n, nil
}

// WriteTo hands the buffered input to w as it comes, without a copy buffer
// of its own: io.Copy uses it, so an idle session holds no buffer. While w
// takes one batch, the next may fill the buffer again.
func (b *InputBuffer) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		b.mu.Lock()
		for len(b.buf) == 0 && !b.closed {
			b.cond.Wait()
		}
		p := b.buf
		b.buf = nil
		b.cond.Broadcast()
		b.mu.Unlock()
		if len(p) == 0 {
			return total, nil
		}
		n, err := w.Write(p)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

// Close ends the input: reads return what is left, then EOF.
func (b *InputBuffer) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.cond.Broadcast()
}
