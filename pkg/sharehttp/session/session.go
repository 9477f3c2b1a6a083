// Package session runs the shared terminal session of an Agent: one command
// in the Agent's pod, its output kept in a log that each page watching it
// reads at its own pace, the input of the pages that may type merged into
// it, and its terminal sized to fit them all. A Registry holds the live
// sessions, one per Agent.
package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/kubeopencode/share/pkg/sharehttp/terminal"
	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

// key names a shared session: one per Agent, which every link of the
// Agent joins. A session ended by a revocation leaves the others alone.
type key struct {
	agentUID types.UID
}

// Registry holds the live shared sessions, one per Agent.
type Registry struct {
	tuning Tuning
	// feedBuffers hold output on its way from the log to a page, so that
	// idle pages hold no buffer.
	feedBuffers sync.Pool
	// readBuffers hold the command's output on its way from the exec
	// stream to the log while the output is busy; see Session.readFrom.
	readBuffers sync.Pool

	mu   sync.Mutex
	live map[key]*Session
}

// NewRegistry returns an empty registry whose sessions run with tuning.
func NewRegistry(tuning Tuning) *Registry {
	r := &Registry{tuning: tuning, live: map[key]*Session{}}
	r.feedBuffers.New = func() any { b := make([]byte, tuning.FeedChunk); return &b }
	r.readBuffers.New = func() any { b := make([]byte, tuning.BusyReadBytes); return &b }
	return r
}

// Resumable reports whether a page asks to resume a session of its Agent
// that is still there; such a page joins without using up its link.
func (r *Registry) Resumable(agent types.UID, resume *ResumePoint) bool {
	if resume == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.live[key{agentUID: agent}]
	return ok && s.id == resume.Session
}

// CloseAll ends every session, those waiting for their pages to come back
// included, at shutdown.
func (r *Registry) CloseAll() {
	r.mu.Lock()
	live := make([]*Session, 0, len(r.live))
	for _, s := range r.live {
		live = append(live, s)
	}
	r.mu.Unlock()
	for _, s := range live {
		s.cancel()
	}
}

// Session is one exec session shared by every page of an Agent's links: one
// process in the pod, its output kept in a log that each page reads at its
// own pace, and the input of every page that may type merged into it.
type Session struct {
	key      key
	id       string
	registry *Registry
	tuning   *Tuning
	ctx      context.Context
	cancel   context.CancelFunc

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
	viewers  map[*Viewer]struct{}
	log      *outputLog
	finished bool
	started  bool
	size     remotecommand.TerminalSize
	grace    *time.Timer
}

// Viewer is one page watching a Session.
type Viewer struct {
	term     *terminal.Session
	readOnly bool
	// kick ends the page's session when it falls too far behind.
	kick func()

	gone    chan struct{} // closed when the page leaves
	once    sync.Once
	wake    chan struct{} // signalled when there is new output
	drained chan struct{} // closed when the page took all output of a finished command

	// Guarded by the session's mu.
	next    int64 // offset of the next output to send
	dropped bool  // no longer paces the command
	// gathering is set while the page's feeder gathers output for one
	// message: new output wakes it only once there is a message's worth,
	// not for every piece, each wake-up a goroutine switch, often a
	// thread's.
	gathering bool
	size      remotecommand.TerminalSize
}

func (v *Viewer) leave() { v.once.Do(func() { close(v.gone) }) }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Join adds a page to the shared session of its Agent, making the session
// when it is the first. start is true for the page whose arrival starts the
// command. A page resuming the session it lost picks up its output where it
// left off, as far as the log still holds it; any other page is shown the
// recent output first. A read-only page's input never reaches the command;
// kick is how the session ends the page's connection when it stalls the
// others.
func (r *Registry) Join(agent types.UID, term *terminal.Session, size remotecommand.TerminalSize, resume *ResumePoint, readOnly bool, kick func()) (*Session, *Viewer, bool) {
	k := key{agentUID: agent}
	r.mu.Lock()
	s, ok := r.live[k]
	if !ok {
		ctx, cancel := context.WithCancel(context.Background())
		id := make([]byte, 16)
		_, _ = rand.Read(id)
		s = &Session{key: k, id: hex.EncodeToString(id), registry: r, tuning: &r.tuning, ctx: ctx, cancel: cancel, stdin: terminal.NewInputBuffer(r.tuning.InputBytes),
			sizes: make(chan remotecommand.TerminalSize, 1), done: make(chan struct{}), room: make(chan struct{}, 1),
			viewers: map[*Viewer]struct{}{}, log: newOutputLog(r.tuning.OutputLogBytes)}
		r.live[k] = s
	}
	v := &Viewer{term: term, readOnly: readOnly, kick: kick, gone: make(chan struct{}), wake: make(chan struct{}, 1),
		drained: make(chan struct{}), size: size}
	s.mu.Lock()
	if s.grace != nil {
		s.grace.Stop()
		s.grace = nil
	}
	s.viewers[v] = struct{}{}
	start := !s.started
	s.started = true
	v.next = max(s.log.start, s.log.end-int64(s.tuning.ReplayBytes))
	if resume != nil && resume.Session == s.id && resume.Offset >= s.log.start && resume.Offset <= s.log.end {
		v.next = resume.Offset
	}
	n := len(s.viewers)
	s.resizeLocked()
	s.mu.Unlock()
	r.mu.Unlock()

	go s.feed(v)
	term.OnResize(func(size remotecommand.TerminalSize) { s.resized(v, size) })
	s.announce(n)
	return s, v, start
}

// Leave removes a page. The last one to leave ends the command, unless it
// lost its connection (linger): then the command runs on for ResumeGrace,
// for the page to come back.
func (s *Session) Leave(v *Viewer, linger bool) {
	v.leave()
	s.registry.mu.Lock()
	s.mu.Lock()
	delete(s.viewers, v)
	n := len(s.viewers)
	if n == 0 && linger {
		s.grace = time.AfterFunc(s.tuning.ResumeGrace, func() { s.abandon() })
	} else if n == 0 && s.registry.live[s.key] == s {
		delete(s.registry.live, s.key)
	}
	s.resizeLocked()
	s.mu.Unlock()
	s.registry.mu.Unlock()
	signal(s.room)
	if n == 0 {
		if !linger {
			s.cancel()
		}
		return
	}
	s.announce(n)
}

// abandon ends a session whose pages did not come back in time.
func (s *Session) abandon() {
	s.registry.mu.Lock()
	s.mu.Lock()
	empty := len(s.viewers) == 0
	if empty && s.registry.live[s.key] == s {
		delete(s.registry.live, s.key)
	}
	s.mu.Unlock()
	s.registry.mu.Unlock()
	if empty {
		s.cancel()
	}
}

func (s *Session) announce(n int) {
	for _, v := range s.viewerList() {
		v.term.SendPresence(n)
	}
}

func (s *Session) viewerList() []*Viewer {
	s.mu.Lock()
	defer s.mu.Unlock()
	viewers := make([]*Viewer, 0, len(s.viewers))
	for v := range s.viewers {
		viewers = append(viewers, v)
	}
	return viewers
}

// Run runs the session's command with exec, which streams it with the
// options it is given, until the command ends or every page has left. The
// first page to join, told so by Join, runs it.
func (s *Session) Run(exec func(ctx context.Context, opts remotecommand.StreamOptions) error) {
	s.finish(exec(s.ctx, remotecommand.StreamOptions{
		Stdin:             s.stdin,
		Stdout:            output{s},
		Tty:               true,
		TerminalSizeQueue: sizeQueue{s},
	}))
}

// output is the exec stream's stdout: the session's log. It has ReadFrom,
// which io.Copy prefers to a buffer of its own.
type output struct{ s *Session }

func (o output) Write(p []byte) (int, error)         { return o.s.write(p) }
func (o output) ReadFrom(r io.Reader) (int64, error) { return o.s.readFrom(r) }

// sizeQueue hands the exec stream the session's terminal sizes.
type sizeQueue struct{ s *Session }

func (q sizeQueue) Next() *remotecommand.TerminalSize { return q.s.nextSize() }

// Done is closed when the command has ended; Err then tells how.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is how the command ended: nil when it exited with status 0. It is
// set once Done is closed.
func (s *Session) Err() error { return s.result }

// Drained is closed when the page has taken all the output of a command
// that ended.
func (v *Viewer) Drained() <-chan struct{} { return v.drained }

// finish records how the command ended and detaches the session, so that the
// next page of the Agent starts a new command. The pages go on taking the
// output the command left.
func (s *Session) finish(err error) {
	s.registry.mu.Lock()
	if s.registry.live[s.key] == s {
		delete(s.registry.live, s.key)
	}
	s.registry.mu.Unlock()
	s.result = err
	s.stdin.Close()
	s.mu.Lock()
	s.finished = true
	s.mu.Unlock()
	for _, v := range s.viewerList() {
		signal(v.wake)
	}
	close(s.done)
}

// write adds the command's output to the log, from which each page takes
// it at its own pace. The log holds OutputLogBytes: a Write that would push
// out output a page has not taken yet waits for that page, so a page's flow
// control reaches the command. When others share the session, a page that
// holds the output up for SlowViewerTimeout is dropped instead.
func (s *Session) write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), s.tuning.OutputLogBytes/2)
		if err := s.append(p[:n]); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// readFrom copies the command's output from r into the log until r ends.
// The exec stream's io.Copy uses it instead of allocating a 32 KiB buffer
// that every session would hold while it waits for output, which is most
// of the time: a read that waits holds IdleReadBytes; a pooled
// BusyReadBytes buffer is taken once a read fills the small one, and given
// back once a read brings less than QuietReadBytes.
func (s *Session) readFrom(r io.Reader) (int64, error) {
	var total int64
	small := make([]byte, s.tuning.IdleReadBytes)
	var big *[]byte
	defer func() {
		if big != nil {
			s.registry.readBuffers.Put(big)
		}
	}()
	for {
		buf := small
		if big != nil {
			buf = *big
		}
		n, err := r.Read(buf)
		if n > 0 {
			written, werr := s.write(buf[:n])
			total += int64(written)
			if werr != nil {
				return total, werr
			}
			switch {
			case big == nil && n == len(small):
				big = s.registry.readBuffers.Get().(*[]byte)
			case big != nil && n < s.tuning.QuietReadBytes:
				s.registry.readBuffers.Put(big)
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

func (s *Session) append(p []byte) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	expired := false
	for {
		s.mu.Lock()
		// Every page that paces the command must have taken the output
		// up to here, for p to fit.
		need := s.log.end + int64(len(p)) - int64(s.log.max)
		var lead, slowest *Viewer
		pacing := 0
		for v := range s.viewers {
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
			s.log.write(p)
			// signal does not block: the feeders are woken under the
			// lock, with no list of them made on every write.
			for v := range s.viewers {
				if !v.gathering || s.log.end-v.next >= int64(s.tuning.CoalesceBytes) {
					signal(v.wake)
				}
			}
			s.mu.Unlock()
			return nil
		}
		if expired && pacing > 1 {
			// Keep the page furthest ahead; drop the ones that hold
			// it up.
			for v := range s.viewers {
				if !v.dropped && v != lead && v.next < need {
					v.dropped = true
					go v.kick()
				}
			}
			s.mu.Unlock()
			continue
		}
		s.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(s.tuning.SlowViewerTimeout)
		}
		select {
		case <-s.room:
		case <-timer.C:
			expired = true
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
	}
}

// feed sends a page its output: first where it starts, then what the log
// holds from there on, as the page takes it.
func (s *Session) feed(v *Viewer) {
	s.mu.Lock()
	from := v.next
	s.mu.Unlock()
	if err := v.term.SendSync(wire.Sync{Session: s.id, Offset: from}); err != nil {
		s.detach(v)
		return
	}
	// hold is made when output first streams, so that pages that only
	// ever see a prompt hold no timer.
	var hold *time.Timer
	held := false
	// lastBulk is when the last message of StreamBytes or more went.
	var lastBulk time.Time
	for {
		s.mu.Lock()
		v.gathering = false
		if v.dropped || v.next < s.log.start {
			s.mu.Unlock()
			return
		}
		if v.next == s.log.end {
			finished := s.finished
			s.mu.Unlock()
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
		if !held && !s.finished && s.log.end-v.next < int64(s.tuning.CoalesceBytes) && (time.Since(lastBulk) < s.tuning.StreamGap || v.term.Unacknowledged() >= s.tuning.CoalesceBehind) {
			v.gathering = true
			s.mu.Unlock()
			if hold == nil {
				hold = time.NewTimer(s.tuning.CoalesceDelay)
			} else {
				hold.Reset(s.tuning.CoalesceDelay)
			}
			held = true
			if !s.gather(v, hold) {
				return
			}
			continue
		}
		held = false
		buf := s.registry.feedBuffers.Get().(*[]byte)
		n := s.log.read(v.next, *buf)
		v.next += int64(n)
		s.mu.Unlock()
		signal(s.room)
		_, err := v.term.Stdout().Write((*buf)[:n])
		s.registry.feedBuffers.Put(buf)
		if err != nil {
			s.detach(v)
			return
		}
		if n >= s.tuning.StreamBytes {
			lastBulk = time.Now()
		}
	}
}

// gather waits until CoalesceBytes of output wait for v, the command ends
// or hold fires, and stops hold. It returns false when the page has gone.
func (s *Session) gather(v *Viewer, hold *time.Timer) bool {
	defer hold.Stop()
	for {
		select {
		case <-v.wake:
			s.mu.Lock()
			enough := s.finished || s.log.end-v.next >= int64(s.tuning.CoalesceBytes)
			s.mu.Unlock()
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
func (s *Session) detach(v *Viewer) {
	s.mu.Lock()
	v.dropped = true
	s.mu.Unlock()
	v.leave()
	signal(s.room)
}

// Input is where a viewer's input goes: into the command, unless the
// viewer may only watch; then it is dropped as it comes, so that the
// page's acknowledgements behind it keep coming.
func (s *Session) Input(v *Viewer) io.Writer {
	if v.readOnly {
		return io.Discard
	}
	return s.stdin
}

// resized follows a viewer's terminal size.
func (s *Session) resized(v *Viewer, size remotecommand.TerminalSize) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v.size = size
	s.resizeLocked()
}

// resizeLocked sizes the command's terminal to the smallest of the viewers',
// as tmux does, so that everyone sees the whole screen. Read-only viewers
// watch at the size of those who type, unless nobody may type.
func (s *Session) resizeLocked() {
	typing := false
	for v := range s.viewers {
		typing = typing || !v.readOnly
	}
	var size remotecommand.TerminalSize
	for v := range s.viewers {
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
	if size.Width == 0 || size.Height == 0 || size == s.size {
		return
	}
	s.size = size
	for {
		select {
		case s.sizes <- size:
			return
		default:
		}
		select {
		case <-s.sizes:
		default:
		}
	}
}

// nextSize hands the command the next terminal size.
func (s *Session) nextSize() *remotecommand.TerminalSize {
	select {
	case size := <-s.sizes:
		return &size
	case <-s.ctx.Done():
		return nil
	}
}
