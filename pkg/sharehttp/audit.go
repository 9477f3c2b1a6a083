package sharehttp

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/lru"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/sharehttp/access"
)

// Event reasons the listener records on Agents.
const (
	EventSessionStarted = "ShareSessionStarted"
	EventSessionEnded   = "ShareSessionEnded"
	EventAccessRefused  = "ShareAccessRefused"
)

// auditor records terminal access as Events on the Agent and in the log.
// Refusals are rate limited per Agent, so that a flood of bad requests cannot
// become a flood of writes to the API server; the log keeps every one at a
// higher verbosity.
type auditor struct {
	recorder record.EventRecorder

	mu       sync.Mutex
	refusals *lru.Cache
}

func newAuditor(recorder record.EventRecorder) *auditor {
	return &auditor{recorder: recorder, refusals: lru.New(4096)}
}

func agentRef(agent types.NamespacedName, uid types.UID) *corev1.ObjectReference {
	return &corev1.ObjectReference{
		APIVersion: v1alpha1.SchemeGroupVersion.String(),
		Kind:       "Agent",
		Namespace:  agent.Namespace,
		Name:       agent.Name,
		UID:        uid,
	}
}

// linkWords names the link of a grant in an Event: `link "default"` or
// `link "qa" (read-only)`.
func linkWords(g *access.Grant) string {
	w := fmt.Sprintf("link %q", share.LinkDisplayName(g.Link))
	if g.ReadOnly {
		w += " (read-only)"
	}
	return w
}

func (a *auditor) sessionStarted(g *access.Grant, pod, client string) {
	klog.InfoS("Share session started", "agent", g.Agent, "link", share.LinkDisplayName(g.Link), "readOnly", g.ReadOnly, "pod", pod, "client", client)
	if a.recorder != nil {
		a.recorder.Eventf(agentRef(g.Agent, g.AgentUID), corev1.EventTypeNormal, EventSessionStarted,
			"Terminal session from %s through %s started in pod %s", client, linkWords(g), pod)
	}
}

func (a *auditor) sessionEnded(g *access.Grant, client, outcome string, d time.Duration, in, out int64) {
	d = d.Round(time.Second)
	klog.InfoS("Share session ended", "agent", g.Agent, "link", share.LinkDisplayName(g.Link), "client", client, "outcome", outcome, "duration", d, "bytesIn", in, "bytesOut", out)
	if a.recorder != nil {
		a.recorder.Eventf(agentRef(g.Agent, g.AgentUID), corev1.EventTypeNormal, EventSessionEnded,
			"Terminal session from %s through %s ended (%s) after %s, %d bytes in, %d bytes out", client, linkWords(g), outcome, d, in, out)
	}
}

func (a *auditor) refused(agent *types.NamespacedName, client, reason string) {
	refusalsTotal.WithLabelValues(reason).Inc()
	if agent == nil {
		// The token is unknown: there is no Agent to tell, and the token itself
		// is never logged.
		klog.V(4).InfoS("Share access refused", "client", client, "reason", reason)
		return
	}
	klog.V(2).InfoS("Share access refused", "agent", *agent, "client", client, "reason", reason)
	if a.recorder == nil || !a.allowRefusalEvent(*agent) {
		return
	}
	a.recorder.Eventf(agentRef(*agent, ""), corev1.EventTypeWarning, EventAccessRefused,
		"Share link access from %s refused: %s", client, reason)
}

func (a *auditor) allowRefusalEvent(agent types.NamespacedName) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	var lim *rate.Limiter
	if v, ok := a.refusals.Get(agent); ok {
		lim = v.(*rate.Limiter)
	} else {
		lim = rate.NewLimiter(rate.Every(time.Minute/6), 3)
		a.refusals.Add(agent, lim)
	}
	return lim.Allow()
}
