package access

import (
	"context"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/secrets"
)

// returnUseTimeout bounds giving back a use, which may run as the listener
// stops.
const returnUseTimeout = 10 * time.Second

// Use is the use of a link limited by maxUses that a terminal connection
// holds while it opens. The use is taken from the Secret before the
// WebSocket upgrade, so that of connections racing for the last use exactly
// one opens a terminal and the others are refused with 410 as any used-up
// link is; it is kept once the page's terminal has started, and given back
// when the connection fails before that, so that an attempt that opened
// nothing does not spend the link of the person it was meant for.
type Use struct {
	resolver *Resolver
	grant    *Grant
	token    string

	once sync.Once
}

// TakeUse takes one use of a limited link; it returns a nil use for a link
// without maxUses.
func (r *Resolver) TakeUse(ctx context.Context, grant *Grant, token string) (*Use, *Refusal) {
	if !grant.Limited {
		return nil, nil
	}
	if refusal := r.consumeUse(ctx, grant, token); refusal != nil {
		return nil, refusal
	}
	return &Use{resolver: r, grant: grant, token: token}, nil
}

// Keep makes the use final: the terminal opened.
func (u *Use) Keep() {
	if u != nil {
		u.once.Do(func() {})
	}
}

// GiveBack returns the use unless it was kept. A use that cannot be given
// back (the API server is away) stays spent: the link then opens one
// terminal fewer, never one more.
func (u *Use) GiveBack() {
	if u == nil {
		return
	}
	u.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), returnUseTimeout)
		defer cancel()
		if err := secrets.ReturnUse(ctx, u.resolver.live, u.resolver.liveWriter, u.resolver.keys.KeyRing(), u.grant.agent, u.grant.Link, u.token); err != nil {
			klog.InfoS("Could not give back the use of a share link whose terminal did not open", "agent", u.grant.Agent,
				"link", share.LinkDisplayName(u.grant.Link), "err", err)
		}
	})
}
