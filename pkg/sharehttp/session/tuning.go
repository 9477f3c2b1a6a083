package session

import "time"

// Tuning holds the sizes and delays of shared sessions. DefaultTuning is
// what the listener runs with; tests change fields of a copy of it.
type Tuning struct {
	// OutputLogBytes is how much recent output a session keeps: what a
	// page may lag behind the command's output, and what a resuming page
	// can get back.
	OutputLogBytes int
	// ReplayBytes bounds the recent output a late joiner is shown first.
	ReplayBytes int
	// SlowViewerTimeout is how long the command's output waits for a page
	// that fell a whole output log behind before that page is dropped,
	// when others share the session: one stalled page must not freeze the
	// terminal of everyone else. A page alone on its session paces the
	// command as a direct exec would.
	SlowViewerTimeout time.Duration
	// DrainTimeout bounds the wait for a page to take the last output of a
	// command that ended, before its status goes out.
	DrainTimeout time.Duration
	// ResumeGrace is how long a session whose last page lost its
	// connection keeps its command running for the page to come back.
	ResumeGrace time.Duration
	// InputBytes bounds the input of a session's pages that the command
	// has not read yet; past it, the pages' connections are not read until
	// it has. It is allocated as input comes.
	InputBytes int
	// FeedChunk is the most output a page is sent in one write.
	FeedChunk int

	// Output streams to a page while the page has not acknowledged
	// CoalesceBehind of what it was sent (it is still taking it in), or
	// while the output keeps coming in bulk: the last message carried at
	// least StreamBytes — more than a keystroke's echo or a prompt — and
	// went less than StreamGap ago. While it streams, output waits up to
	// CoalesceDelay for CoalesceBytes to gather and goes in one message,
	// instead of in the 1–4 KiB pieces a PTY delivers: fewer, larger
	// messages cost the listener and the page less per byte, and the page
	// would queue the output behind what it is parsing anyway. Output that
	// does not stream — a keystroke's echo, a prompt after a pause — goes
	// at once. CoalesceBytes is a message's worth, FeedChunk by default.
	// Tests make CoalesceDelay and StreamGap long, so that only
	// gathered output or the command's end releases held output, and
	// output streams however slowly the test runs.
	CoalesceBehind int
	CoalesceBytes  int
	StreamBytes    int
	CoalesceDelay  time.Duration
	StreamGap      time.Duration

	// IdleReadBytes is the buffer the command's output is read into while
	// it comes in small pieces (keystrokes echoed, a prompt), as it does
	// when a session is idle: a session blocked waiting for output holds
	// this much rather than a full copy buffer.
	IdleReadBytes int
	// BusyReadBytes is the buffer, from a pool, the output is read into
	// while it comes in pieces bigger than IdleReadBytes: io.Copy's size,
	// so that a busy stream is read in as few calls as before.
	BusyReadBytes int
	// QuietReadBytes is a read small enough to say the output has quieted
	// down — a keystroke's echo, a prompt — and the busy buffer can go
	// back. A busy PTY's output comes in pieces of 1–4 KiB, which must not
	// send it back: the next piece would need it again.
	QuietReadBytes int
}

// DefaultTuning returns the tuning the listener runs with.
func DefaultTuning() Tuning {
	return Tuning{
		OutputLogBytes:    256 << 10,
		ReplayBytes:       64 << 10,
		SlowViewerTimeout: 5 * time.Second,
		DrainTimeout:      5 * time.Second,
		ResumeGrace:       30 * time.Second,
		InputBytes:        1 << 20,
		FeedChunk:         32 << 10,
		CoalesceBehind:    16 << 10,
		CoalesceBytes:     32 << 10,
		StreamBytes:       1 << 10,
		CoalesceDelay:     time.Millisecond,
		StreamGap:         time.Millisecond,
		IdleReadBytes:     2 << 10,
		BusyReadBytes:     32 << 10,
		QuietReadBytes:    512,
	}
}
