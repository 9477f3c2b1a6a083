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

	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/sharehttp/terminal"
	"github.com/kubeopencode/share/pkg/sharehttp/wire"
)

const (
	// replayBytes bounds the recent output a late joiner is shown first.
	replayBytes = 64 << 10
	// viewerQueue is how many output chunks may wait for one viewer.
	viewerQueue = 64
	// slowViewerTimeout is how long the command's output waits for the
	// slowest viewer before that viewer is dropped, so one stalled page
	// cannot freeze the terminal of everyone else for long.
	slowViewerTimeout = 10 * time.Second
	// resumeGrace is how long a session whose last page lost its
	// connection keeps its command running for the page to come back.
	resumeGrace = 30 * time.Second
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

// hubKey names a shared session: one per link, so a rotated token starts a
// new one.
type hubKey struct {
	agentUID  types.UID
	tokenHash string
}

// hubs holds the live shared sessions.
type hubs struct {
	mu   sync.Mutex
	live map[hubKey]*hub
}

func newHubs() *hubs { return &hubs{live: map[hubKey]*hub{}} }

// resumable reports whether a page asks to resume a session of its link
// that is still there; such a page joins without using up its link.
func (hs *hubs) resumable(grant *Grant, token string, resume *ResumePoint) bool {
	if resume == nil {
		return false
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h, ok := hs.live[hubKey{agentUID: grant.AgentUID, tokenHash: share.TokenHash(token)}]
	return ok && h.id == resume.Session
}

// hub is one exec session shared by every viewer of a link: one process in
// the pod, its output fanned out to each page and the input of every page
// merged into it.
type hub struct {
	key    hubKey
	id     string
	parent *hubs
	ctx    context.Context
	cancel context.CancelFunc

	stdinR *io.PipeReader
	stdinW *io.PipeWriter
	sizes  chan remotecommand.TerminalSize
	done   chan struct{}
	result error

	mu      sync.Mutex
	viewers map[*viewer]struct{}
	replay  []byte
	// total counts the output bytes of the session; replay holds its last
	// ones, from total-len(replay).
	total   int64
	started bool
	size    remotecommand.TerminalSize
	grace   *time.Timer
}

// viewer is one page on a hub.
type viewer struct {
	term *terminal.Session
	out  chan outItem
	gone chan struct{}
	once sync.Once
	size remotecommand.TerminalSize
}

// outItem is what a viewer is sent next: output, or where it starts.
type outItem struct {
	data []byte
	sync *wire.Sync
}

func (v *viewer) leave() { v.once.Do(func() { close(v.gone) }) }

// join adds a page to the shared session of its link, making the session
// when it is the first. start is true for the page whose arrival starts the
// command. A page resuming the session it lost picks up its output where it
// left off, as far as the replay still holds it; any other page is shown the
// replay first.
func (hs *hubs) join(grant *Grant, token string, term *terminal.Session, size remotecommand.TerminalSize, resume *ResumePoint) (*hub, *viewer, bool) {
	key := hubKey{agentUID: grant.AgentUID, tokenHash: share.TokenHash(token)}
	hs.mu.Lock()
	h, ok := hs.live[key]
	if !ok {
		ctx, cancel := context.WithCancel(context.Background())
		r, w := io.Pipe()
		id := make([]byte, 16)
		_, _ = rand.Read(id)
		h = &hub{key: key, id: hex.EncodeToString(id), parent: hs, ctx: ctx, cancel: cancel, stdinR: r, stdinW: w,
			sizes: make(chan remotecommand.TerminalSize, 1), done: make(chan struct{}), viewers: map[*viewer]struct{}{}}
		hs.live[key] = h
	}
	v := &viewer{term: term, out: make(chan outItem, viewerQueue), gone: make(chan struct{}), size: size}
	h.mu.Lock()
	if h.grace != nil {
		h.grace.Stop()
		h.grace = nil
	}
	h.viewers[v] = struct{}{}
	start := !h.started
	h.started = true
	from := h.total - int64(len(h.replay))
	if resume != nil && resume.Session == h.id && resume.Offset > from && resume.Offset <= h.total {
		from = resume.Offset
	}
	v.out <- outItem{sync: &wire.Sync{Session: h.id, Offset: from}}
	if rest := h.replay[from-(h.total-int64(len(h.replay))):]; len(rest) > 0 {
		v.out <- outItem{data: append([]byte(nil), rest...)}
	}
	n := len(h.viewers)
	h.resizeLocked()
	h.mu.Unlock()
	hs.mu.Unlock()

	go h.feed(v)
	go h.typeFrom(v)
	go h.resizeFrom(v)
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
	h.mu.Lock()
	viewers := make([]*viewer, 0, len(h.viewers))
	for v := range h.viewers {
		viewers = append(viewers, v)
	}
	h.mu.Unlock()
	for _, v := range viewers {
		v.term.SendPresence(n)
	}
}

// finish records how the command ended and detaches the hub, so that the
// next page of the link starts a new command.
func (h *hub) finish(err error) {
	h.parent.mu.Lock()
	if h.parent.live[h.key] == h {
		delete(h.parent.live, h.key)
	}
	h.parent.mu.Unlock()
	h.result = err
	_ = h.stdinR.Close()
	close(h.done)
}

// Write fans the command's output out to every viewer and keeps the tail
// for late joiners. It waits for each viewer's queue, so flow control on the
// pages reaches the command, but drops a viewer that stalls for too long.
func (h *hub) Write(p []byte) (int, error) {
	chunk := append([]byte(nil), p...)
	h.mu.Lock()
	h.total += int64(len(chunk))
	h.replay = append(h.replay, chunk...)
	if over := len(h.replay) - replayBytes; over > 0 {
		h.replay = append([]byte(nil), h.replay[over:]...)
	}
	viewers := make([]*viewer, 0, len(h.viewers))
	for v := range h.viewers {
		viewers = append(viewers, v)
	}
	h.mu.Unlock()
	for _, v := range viewers {
		timer := time.NewTimer(slowViewerTimeout)
		select {
		case v.out <- outItem{data: chunk}:
		case <-v.gone:
		case <-h.ctx.Done():
		case <-timer.C:
			go v.term.Close(closeServerError, slowViewerStatus)
			v.leave()
		}
		timer.Stop()
	}
	if h.ctx.Err() != nil {
		return 0, h.ctx.Err()
	}
	return len(p), nil
}

// feed writes the queued output to a viewer's page.
func (h *hub) feed(v *viewer) {
	for {
		select {
		case <-v.gone:
			return
		case item := <-v.out:
			var err error
			if item.sync != nil {
				err = v.term.SendSync(*item.sync)
			} else {
				_, err = v.term.Stdout().Write(item.data)
			}
			if err != nil {
				v.leave()
				return
			}
		}
	}
}

// typeFrom copies a viewer's input into the command.
func (h *hub) typeFrom(v *viewer) {
	_, _ = io.Copy(h.stdinW, v.term.Stdin())
}

// resizeFrom follows a viewer's terminal size.
func (h *hub) resizeFrom(v *viewer) {
	for {
		size := v.term.Next()
		if size == nil {
			return
		}
		h.mu.Lock()
		v.size = *size
		h.resizeLocked()
		h.mu.Unlock()
	}
}

// resizeLocked sizes the command's terminal to the smallest of the viewers',
// as tmux does, so that everyone sees the whole screen.
func (h *hub) resizeLocked() {
	var size remotecommand.TerminalSize
	for v := range h.viewers {
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

// viewerCount returns the number of pages on the hub.
func (h *hub) viewerCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.viewers)
}
