package sharehttp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/kubeopencode/share/pkg/sharehttp/terminal"
	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

const (
	// outputLogBytes is how much recent output a session keeps: what a page
	// may lag behind the command's output, and what a resuming page can get
	// back.
	outputLogBytes = 256 << 10
	// replayBytes bounds the recent output a late joiner is shown first.
	replayBytes = 64 << 10
	// slowViewerTimeout is how long the command's output waits for a page
	// that fell a whole output log behind before that page is dropped, when
	// others share the session: one stalled page must not freeze the
	// terminal of everyone else. A page alone on its session paces the
	// command as a direct exec would.
	slowViewerTimeout = 5 * time.Second
	// drainTimeout bounds the wait for a page to take the last output of a
	// command that ended, before its status goes out.
	drainTimeout = 5 * time.Second
	// resumeGrace is how long a session whose last page lost its
	// connection keeps its command running for the page to come back.
	resumeGrace = 30 * time.Second
	// hubInputBytes bounds the input of a session's pages that the command
	// has not read yet; past it, the pages' connections are not read until
	// it has. It is allocated as input comes.
	hubInputBytes = 1 << 20
	// feedChunk is the most output a page is sent in one write.
	feedChunk = 32 << 10
	// Output streams to a page while the page has not acknowledged
	// coalesceBehind of what it was sent (it is still taking it in), or
	// while the output keeps coming in bulk: the last message carried at
	// least streamBytes — more than a keystroke's echo or a prompt — and
	// went less than streamGap ago. While it streams, output
	// waits up to coalesceDelay for coalesceBytes to gather and goes in one
	// message, instead of in the 1–4 KiB pieces a PTY delivers: fewer,
	// larger messages cost the listener and the page less per byte, and
	// the page would queue the output behind what it is parsing anyway.
	// Output that does not stream — a keystroke's echo, a prompt after a
	// pause — goes at once.
	coalesceBehind = 16 << 10
	coalesceBytes  = feedChunk
	streamBytes    = 1 << 10
	// idleReadBytes is the buffer the command's output is read into while
	// it comes in small pieces (keystrokes echoed, a prompt), as it does
	// when a session is idle: a session blocked waiting for output holds
	// this much rather than a full copy buffer.
	idleReadBytes = 2 << 10
	// busyReadBytes is the buffer, from a pool, the output is read into
	// while it comes in pieces bigger than idleReadBytes: io.Copy's size,
	// so that a busy stream is read in as few calls as before.
	busyReadBytes = 32 << 10
	// quietReadBytes is a read small enough to say the output has quieted
	// down — a keystroke's echo, a prompt — and the busy buffer can go
	// back. A busy PTY's output comes in pieces of 1–4 KiB, which must
	// not send it back: the next piece would need it again.
	quietReadBytes = 512
)

// coalesceDelay and streamGap are variables for tests, which make them
// long enough that only gathered output or the command's end can release
// held output, and that output streams however slowly the test runs.
var (
	coalesceDelay = time.Millisecond
	streamGap     = time.Millisecond
)

// ResumePoint is where a page that lost its connection asks to pick its
// session up again: the session's ID and the output offset it had reached.
type ResumePoint struct {
	Session string
	Offset  int64
}

// ParseResumePoint parses the resume query parameter, "<session>:<offset>".
func ParseResumePoint(s string) (*ResumePoint, bool) {
	id, off, ok := strings.Cut(s, ":")
	if !ok || len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return nil, false
	}
	n, err := strconv.ParseInt(off, 10, 64)
	if err != nil || n < 0 {
		return nil, false
	}
	return &ResumePoint{Session: id, Offset: n}, true
}

// slowViewerStatus ends the session of a page that stopped taking output.
var slowViewerStatus = wire.Status{Reason: "TooSlow", Message: "This page fell too far behind the terminal's output and was disconnected. Reconnect to catch up."}

// hubKey names a shared session: one per Agent, which every link of the
// Agent joins. A session ended by a revocation leaves the others alone.
type hubKey struct {
	agentUID types.UID
}

// hubs holds the live shared sessions.
type hubs struct {
	mu   sync.Mutex
	live map[hubKey]*hub
}

func newHubs() *hubs { return &hubs{live: map[hubKey]*hub{}} }

// resumable reports whether a page asks to resume a session of its Agent
// that is still there; such a page joins without using up its link.
func (hs *hubs) resumable(grant *Grant, resume *ResumePoint) bool {
	if resume == nil {
		return false
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h, ok := hs.live[hubKey{agentUID: grant.AgentUID}]
	return ok && h.id == resume.Session
}

// closeAll ends every session, those waiting for their pages to come back
// included, at shutdown.
func (hs *hubs) closeAll() {
	hs.mu.Lock()
	live := make([]*hub, 0, len(hs.live))
	for _, h := range hs.live {
		live = append(live, h)
	}
	hs.mu.Unlock()
	for _, h := range live {
		h.cancel()
	}
}

// hub is one exec session shared by every viewer of an Agent's links: one
// process in the pod, its output kept in a log that each page reads at its
// own pace, and the input of every page that may type merged into it.
type hub struct {
	key    hubKey
	id     string
	parent *hubs
	ctx    context.Context
	cancel context.CancelFunc

	// stdin merges the input of the pages that may type. It hands the exec
	// stream what it holds without a copy buffer of the stream's own.
	stdin  *terminal.InputBuffer
	sizes  chan remotecommand.TerminalSize
	done   chan struct{}
	result error
	// room is signalled when a page took output, for a Write waiting for
	// space in the log.
	room chan struct{}

	mu       sync.Mutex
	viewers  map[*viewer]struct{}
	log      *outputLog
	finished bool
	started  bool
	size     remotecommand.TerminalSize
	grace    *time.Timer
}

// viewer is one page on a hub.
type viewer struct {
	term     *terminal.Session
	readOnly bool
	// kick ends the page's session when it falls too far behind.
	kick func()

	gone    chan struct{} // closed when the page leaves
	once    sync.Once
	wake    chan struct{} // signalled when there is new output
	drained chan struct{} // closed when the page took all output of a finished command

	// Guarded by the hub's mu.
	next    int64 // offset of the next output to send
	dropped bool  // no longer paces the command
	// gathering is set while the page's feeder gathers output for one
	// message: new output wakes it only once there is a message's worth,
	// not for every piece, each wake-up a goroutine switch, often a
	// thread's.
	gathering bool
	size      remotecommand.TerminalSize
}

func (v *viewer) leave() { v.once.Do(func() { close(v.gone) }) }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// feedBuffers hold output on its way from the log to a page, so that idle
// pages hold no buffer.
var feedBuffers = sync.Pool{New: func() any { b := make([]byte, feedChunk); return &b }}

// readBuffers hold the command's output on its way from the exec stream to
// the log while the output is busy; see hub.ReadFrom.
var readBuffers = sync.Pool{New: func() any { b := make([]byte, busyReadBytes); return &b }}

// join adds a page to the shared session of its Agent, making the session
// when it is the first. start is true for the page whose arrival starts the
// command. A page resuming the session it lost picks up its output where it
// left off, as far as the log still holds it; any other page is shown the
// recent output first. A read-only page's input never reaches the command;
// kick is how the hub ends the page's session when it stalls the others.
func (hs *hubs) join(grant *Grant, term *terminal.Session, size remotecommand.TerminalSize, resume *ResumePoint, readOnly bool, kick func()) (*hub, *viewer, bool) {
	key := hubKey{agentUID: grant.AgentUID}
	hs.mu.Lock()
	h, ok := hs.live[key]
	if !ok {
		ctx, cancel := context.WithCancel(context.Background())
		id := make([]byte, 16)
		_, _ = rand.Read(id)
		h = &hub{key: key, id: hex.EncodeToString(id), parent: hs, ctx: ctx, cancel: cancel, stdin: terminal.NewInputBuffer(hubInputBytes),
			sizes: make(chan remotecommand.TerminalSize, 1), done: make(chan struct{}), room: make(chan struct{}, 1),
			viewers: map[*viewer]struct{}{}, log: newOutputLog(outputLogBytes)}
		hs.live[key] = h
	}
	v := &viewer{term: term, readOnly: readOnly, kick: kick, gone: make(chan struct{}), wake: make(chan struct{}, 1),
		drained: make(chan struct{}), size: size}
	h.mu.Lock()
	if h.grace != nil {
		h.grace.Stop()
		h.grace = nil
	}
	h.viewers[v] = struct{}{}
	start := !h.started
	h.started = true
	v.next = max(h.log.start, h.log.end-replayBytes)
	if resume != nil && resume.Session == h.id && resume.Offset >= h.log.start && resume.Offset <= h.log.end {
		v.next = resume.Offset
	}
	n := len(h.viewers)
	h.resizeLocked()
	h.mu.Unlock()
	hs.mu.Unlock()

	go h.feed(v)
	term.OnResize(func(size remotecommand.TerminalSize) { h.resized(v, size) })
	h.announce(n)
	return h, v, start
}

// leave removes a page. The last one to leave ends the command, unless it
// lost its connection (linger): then the command runs on for resumeGrace,
// for the page to come back.
func (h *hub) leave(v *viewer, linger bool) {
	v.leave()
	h.parent.mu.Lock()
	h.mu.Lock()
	delete(h.viewers, v)
	n := len(h.viewers)
	if n == 0 && linger {
		h.grace = time.AfterFunc(resumeGrace, func() { h.abandon() })
	} else if n == 0 && h.parent.live[h.key] == h {
		delete(h.parent.live, h.key)
	}
	h.resizeLocked()
	h.mu.Unlock()
	h.parent.mu.Unlock()
	signal(h.room)
	if n == 0 {
		if !linger {
			h.cancel()
		}
		return
	}
	h.announce(n)
}

// abandon ends a session whose pages did not come back in time.
func (h *hub) abandon() {
	h.parent.mu.Lock()
	h.mu.Lock()
	empty := len(h.viewers) == 0
	if empty && h.parent.live[h.key] == h {
		delete(h.parent.live, h.key)
	}
	h.mu.Unlock()
	h.parent.mu.Unlock()
	if empty {
		h.cancel()
	}
}

func (h *hub) announce(n int) {
	for _, v := range h.viewerList() {
		v.term.SendPresence(n)
	}
}

func (h *hub) viewerList() []*viewer {
	h.mu.Lock()
	defer h.mu.Unlock()
	viewers := make([]*viewer, 0, len(h.viewers))
	for v := range h.viewers {
		viewers = append(viewers, v)
	}
	return viewers
}

// finish records how the command ended and detaches the hub, so that the
// next page of the Agent starts a new command. The pages go on taking the
// output the command left.
func (h *hub) finish(err error) {
	h.parent.mu.Lock()
	if h.parent.live[h.key] == h {
		delete(h.parent.live, h.key)
	}
	h.parent.mu.Unlock()
	h.result = err
	h.stdin.Close()
	h.mu.Lock()
	h.finished = true
	h.mu.Unlock()
	for _, v := range h.viewerList() {
		signal(v.wake)
	}
	close(h.done)
}

// Write adds the command's output to the log, from which each page takes
// it at its own pace. The log holds outputLogBytes: a Write that would push
// out output a page has not taken yet waits for that page, so a page's flow
// control reaches the command. When others share the session, a page that
// holds the output up for slowViewerTimeout is dropped instead.
func (h *hub) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), outputLogBytes/2)
		if err := h.append(p[:n]); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// ReadFrom copies the command's output from r into the log until r ends.
// The exec stream's io.Copy uses it instead of allocating a 32 KiB buffer
// that every session would hold while it waits for output, which is most
// of the time: a read that waits holds idleReadBytes; a pooled
// busyReadBytes buffer is taken once a read fills the small one, and given
// back once a read brings less than quietReadBytes.
func (h *hub) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	small := make([]byte, idleReadBytes)
	var big *[]byte
	defer func() {
		if big != nil {
			readBuffers.Put(big)
		}
	}()
	for {
		buf := small
		if big != nil {
			buf = *big
		}
		n, err := r.Read(buf)
		if n > 0 {
			written, werr := h.Write(buf[:n])
			total += int64(written)
			if werr != nil {
				return total, werr
			}
			switch {
			case big == nil && n == len(small):
				big = readBuffers.Get().(*[]byte)
			case big != nil && n < quietReadBytes:
				readBuffers.Put(big)
				big = nil
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (h *hub) append(p []byte) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	expired := false
	for {
		h.mu.Lock()
		// Every page that paces the command must have taken the output
		// up to here, for p to fit.
		need := h.log.end + int64(len(p)) - int64(h.log.max)
		var lead, slowest *viewer
		pacing := 0
		for v := range h.viewers {
			if v.dropped {
				continue
			}
			pacing++
			if lead == nil || v.next > lead.next {
				lead = v
			}
			if slowest == nil || v.next < slowest.next {
				slowest = v
			}
		}
		if slowest == nil || slowest.next >= need {
			h.log.write(p)
			// signal does not block: the feeders are woken under the
			// lock, with no list of them made on every write.
			for v := range h.viewers {
				if !v.gathering || h.log.end-v.next >= coalesceBytes {
					signal(v.wake)
				}
			}
			h.mu.Unlock()
			return nil
		}
		if expired && pacing > 1 {
			// Keep the page furthest ahead; drop the ones that hold
			// it up.
			for v := range h.viewers {
				if !v.dropped && v != lead && v.next < need {
					v.dropped = true
					go v.kick()
				}
			}
			h.mu.Unlock()
			continue
		}
		h.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(slowViewerTimeout)
		}
		select {
		case <-h.room:
		case <-timer.C:
			expired = true
		case <-h.ctx.Done():
			return h.ctx.Err()
		}
	}
}

// feed sends a page its output: first where it starts, then what the log
// holds from there on, as the page takes it.
func (h *hub) feed(v *viewer) {
	h.mu.Lock()
	from := v.next
	h.mu.Unlock()
	if err := v.term.SendSync(wire.Sync{Session: h.id, Offset: from}); err != nil {
		h.detach(v)
		return
	}
	// hold is made when output first streams, so that pages that only
	// ever see a prompt hold no timer.
	var hold *time.Timer
	held := false
	// lastBulk is when the last message of streamBytes or more went.
	var lastBulk time.Time
	for {
		h.mu.Lock()
		v.gathering = false
		if v.dropped || v.next < h.log.start {
			h.mu.Unlock()
			return
		}
		if v.next == h.log.end {
			finished := h.finished
			h.mu.Unlock()
			if finished {
				close(v.drained)
				return
			}
			select {
			case <-v.wake:
			case <-v.gone:
				return
			}
			continue
		}
		if !held && !h.finished && h.log.end-v.next < coalesceBytes && (time.Since(lastBulk) < streamGap || v.term.Unacknowledged() >= coalesceBehind) {
			v.gathering = true
			h.mu.Unlock()
			if hold == nil {
				hold = time.NewTimer(coalesceDelay)
			} else {
				hold.Reset(coalesceDelay)
			}
			held = true
			if !h.gather(v, hold) {
				return
			}
			continue
		}
		held = false
		buf := feedBuffers.Get().(*[]byte)
		n := h.log.read(v.next, *buf)
		v.next += int64(n)
		h.mu.Unlock()
		signal(h.room)
		_, err := v.term.Stdout().Write((*buf)[:n])
		feedBuffers.Put(buf)
		if err != nil {
			h.detach(v)
			return
		}
		if n >= streamBytes {
			lastBulk = time.Now()
		}
	}
}

// gather waits until coalesceBytes of output wait for v, the command ends
// or hold fires, and stops hold. It returns false when the page has gone.
func (h *hub) gather(v *viewer, hold *time.Timer) bool {
	defer hold.Stop()
	for {
		select {
		case <-v.wake:
			h.mu.Lock()
			enough := h.finished || h.log.end-v.next >= coalesceBytes
			h.mu.Unlock()
			if enough {
				return true
			}
		case <-hold.C:
			return true
		case <-v.gone:
			return false
		}
	}
}

// detach stops a page that can take no more output from pacing the
// command.
func (h *hub) detach(v *viewer) {
	h.mu.Lock()
	v.dropped = true
	h.mu.Unlock()
	v.leave()
	signal(h.room)
}

// inputOf is where a viewer's input goes: into the command, unless the
// viewer may only watch; then it is dropped as it comes, so that the
// page's acknowledgements behind it keep coming.
func (h *hub) inputOf(v *viewer) io.Writer {
	if v.readOnly {
		return io.Discard
	}
	return h.stdin
}

// pageInput is where a page's typed input goes: it waits for the page to
// join its session, then goes where the session says (hub.inputOf). The
// page's connection is not read while it waits, nor while the command's
// input is full.
type pageInput struct {
	once      sync.Once
	connected chan struct{}
	to        io.Writer
}

func newPageInput() *pageInput { return &pageInput{connected: make(chan struct{})} }

func (p *pageInput) Write(b []byte) (int, error) {
	<-p.connected
	return p.to.Write(b)
}

// connect sends the input to w from now on. Only the first call counts: a
// page that never joins is connected to io.Discard when its session ends.
func (p *pageInput) connect(w io.Writer) {
	p.once.Do(func() {
		p.to = w
		close(p.connected)
	})
}

// resized follows a viewer's terminal size.
func (h *hub) resized(v *viewer, size remotecommand.TerminalSize) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v.size = size
	h.resizeLocked()
}

// resizeLocked sizes the command's terminal to the smallest of the viewers',
// as tmux does, so that everyone sees the whole screen. Read-only viewers
// watch at the size of those who type, unless nobody may type.
func (h *hub) resizeLocked() {
	typing := false
	for v := range h.viewers {
		typing = typing || !v.readOnly
	}
	var size remotecommand.TerminalSize
	for v := range h.viewers {
		if typing && v.readOnly {
			continue
		}
		if size.Width == 0 || (v.size.Width > 0 && v.size.Width < size.Width) {
			size.Width = v.size.Width
		}
		if size.Height == 0 || (v.size.Height > 0 && v.size.Height < size.Height) {
			size.Height = v.size.Height
		}
	}
	if size.Width == 0 || size.Height == 0 || size == h.size {
		return
	}
	h.size = size
	for {
		select {
		case h.sizes <- size:
			return
		default:
		}
		select {
		case <-h.sizes:
		default:
		}
	}
}

// Next hands the command the next terminal size.
func (h *hub) Next() *remotecommand.TerminalSize {
	select {
	case size := <-h.sizes:
		return &size
	case <-h.ctx.Done():
		return nil
	}
}
