package session

// outputLog holds the most recent output of a session in a ring: the bytes
// from offset start to end of everything the command wrote. It starts small
// and grows up to max, so that idle sessions cost little.
type outputLog struct {
	buf        []byte
	max        int
	start, end int64
}

const outputLogMinSize = 4 << 10

func newOutputLog(max int) *outputLog { return &outputLog{max: max} }

// write appends p, evicting the oldest bytes past max.
func (l *outputLog) write(p []byte) {
	if len(p) > l.max {
		l.end += int64(len(p) - l.max)
		l.start = l.end
		p = p[len(p)-l.max:]
	}
	if need := int(l.end-l.start) + len(p); need > len(l.buf) && len(l.buf) < l.max {
		l.grow(need)
	}
	for len(p) > 0 {
		at := int(l.end % int64(len(l.buf)))
		n := copy(l.buf[at:], p)
		p = p[n:]
		l.end += int64(n)
	}
	if held := l.end - int64(len(l.buf)); l.start < held {
		l.start = held
	}
}

// grow reallocates the ring for at least need bytes (at most max), keeping
// what it holds at the same offsets.
func (l *outputLog) grow(need int) {
	size := max(len(l.buf), outputLogMinSize)
	for size < need {
		size *= 2
	}
	size = min(size, l.max)
	buf := make([]byte, size)
	for off := l.start; off < l.end; {
		n := l.read(off, buf[int(off%int64(size)):])
		off += int64(n)
	}
	l.buf = buf
}

// read copies the output from offset off, which must lie between start and
// end, into p, and returns how many bytes it copied.
func (l *outputLog) read(off int64, p []byte) int {
	if off < l.start || off >= l.end || len(p) == 0 {
		return 0
	}
	at := int(off % int64(len(l.buf)))
	n := min(len(p), int(l.end-off), len(l.buf)-at)
	return copy(p, l.buf[at:at+n])
}
