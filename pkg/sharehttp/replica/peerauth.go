package replica

import (
	"crypto/hmac"
	"encoding/base64"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/kubeopencode/share/pkg/share"
)

const (
	// HeaderClient carries, from the replica that received a page to the
	// owner of its session, the page's client address.
	HeaderClient = "Kubeopencode-Forwarded-Client"
	// HeaderProof proves that a replica wrote HeaderClient for this very
	// request: "<key id>:<unix seconds>:<HMAC-SHA256, base64url>".
	HeaderProof = "Kubeopencode-Forwarded-Proof"
	// DefaultPeerKeyName is the Secret, in the signing key's namespace, of
	// the keys the replicas prove forwarded requests with. The first
	// replica to start makes it.
	DefaultPeerKeyName = "kubeopencode-share-peer-key"
	// peerProofContext keeps these MACs apart from any other use of a key.
	peerProofContext = "kubeopencode.io/share-forwarded-client/v1"
	// proofWindow is how far a proof's time may be from the owner's clock,
	// either way: the time a forward takes, and the replicas' clock skew.
	proofWindow = 30 * time.Second
	// maxRememberedProofs bounds the proofs kept to refuse replays. A
	// forward is one proof; more forwards than this within twice the
	// window are refused until older proofs age out.
	maxRememberedProofs = 100000
)

// Refusals of a forwarded request, as the metric counts them.
var (
	ErrNoProof      = errors.New("forwarded client address without a proof")
	ErrBadProof     = errors.New("forwarded client address with a proof that does not hold")
	ErrStaleProof   = errors.New("forwarded client address with a proof out of its time window")
	ErrReplayed     = errors.New("forwarded client address with a proof already used")
	ErrBusy         = errors.New("too many forwarded requests to remember their proofs")
	ErrNoPeerKey    = errors.New("no key to prove forwarded requests with is known")
	errBadAddress   = errors.New("forwarded client address that is not an IP address")
	proofRefusalFor = map[error]string{
		ErrNoProof: "missing", ErrBadProof: "invalid", ErrStaleProof: "stale", ErrReplayed: "replayed",
		ErrBusy: "busy", ErrNoPeerKey: "nokey", errBadAddress: "invalid",
	}
)

// PeerAuth proves and checks the client address a replica forwards with a
// page's request. The proof is an HMAC under a key of the peer key Secret,
// which only the listener's ServiceAccount reads, over the address, the
// request's method, URI, Host and WebSocket key, and the time: it holds for
// this request only, for proofWindow, and once.
type PeerAuth struct {
	keys  share.Keys
	clock clock.PassiveClock

	mu   sync.Mutex
	seen map[string]time.Time // proofs used, by when they may be forgotten
	// pruned is when seen was last rid of proofs past their window.
	pruned time.Time
}

// NewPeerAuth returns a PeerAuth with the peer keys.
func NewPeerAuth(keys share.Keys, clk clock.PassiveClock) *PeerAuth {
	return &PeerAuth{keys: keys, clock: clk, seen: map[string]time.Time{}}
}

// Sign sets the forwarded client address and its proof on r, the request
// as it goes to the owner.
func (a *PeerAuth) Sign(r *http.Request, client netip.Addr) error {
	ring := a.keys.KeyRing()
	id := ring.SignerID()
	if id == "" {
		return ErrNoPeerKey
	}
	ts := strconv.FormatInt(a.clock.Now().Unix(), 10)
	sum, ok := ring.Sum(id, peerProofContext, proofFields(r, client.String(), ts)...)
	if !ok {
		return ErrNoPeerKey
	}
	r.Header.Set(HeaderClient, client.String())
	r.Header.Set(HeaderProof, id+":"+ts+":"+base64.RawURLEncoding.EncodeToString(sum))
	return nil
}

// proofFields are what a proof binds: the address, the request and the
// time.
func proofFields(r *http.Request, client, ts string) []string {
	return []string{client, ts, r.Method, r.URL.RequestURI(), r.Host, r.Header.Get("Sec-Websocket-Key")}
}

// Verify returns the client address a replica forwarded with r. forwarded
// is false, with no error, when r carries neither header: the page reached
// this replica directly. A request that carries either header without a
// proof that holds is refused with the reason.
func (a *PeerAuth) Verify(r *http.Request) (client netip.Addr, forwarded bool, err error) {
	addrs, proofs := r.Header.Values(HeaderClient), r.Header.Values(HeaderProof)
	if len(addrs) == 0 && len(proofs) == 0 {
		return netip.Addr{}, false, nil
	}
	if len(addrs) != 1 || len(proofs) != 1 {
		return netip.Addr{}, true, ErrNoProof
	}
	addr, err := netip.ParseAddr(addrs[0])
	if err != nil || addr.Zone() != "" || addr.String() != addrs[0] {
		return netip.Addr{}, true, errBadAddress
	}
	id, rest, ok1 := strings.Cut(proofs[0], ":")
	ts, sum64, ok2 := strings.Cut(rest, ":")
	secs, err := strconv.ParseInt(ts, 10, 64)
	if !ok1 || !ok2 || err != nil || strconv.FormatInt(secs, 10) != ts {
		return netip.Addr{}, true, ErrBadProof
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(sum64)
	if err != nil {
		return netip.Addr{}, true, ErrBadProof
	}
	want, ok := a.keys.KeyRing().Sum(id, peerProofContext, proofFields(r, addrs[0], ts)...)
	if !ok || !hmac.Equal(got, want) {
		return netip.Addr{}, true, ErrBadProof
	}
	now := a.clock.Now()
	at := time.Unix(secs, 0)
	if at.Before(now.Add(-proofWindow)) || at.After(now.Add(proofWindow)) {
		return netip.Addr{}, true, ErrStaleProof
	}
	if err := a.remember(proofs[0], at.Add(proofWindow), now); err != nil {
		return netip.Addr{}, true, err
	}
	return addr.Unmap(), true, nil
}

// remember records a proof as used until forget, and refuses one used
// before.
func (a *PeerAuth) remember(proof string, forget, now time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, used := a.seen[proof]; used {
		return ErrReplayed
	}
	if len(a.seen) >= maxRememberedProofs || now.Sub(a.pruned) >= proofWindow {
		for p, t := range a.seen {
			if !now.Before(t) {
				delete(a.seen, p)
			}
		}
		a.pruned = now
		if len(a.seen) >= maxRememberedProofs {
			return ErrBusy
		}
	}
	a.seen[proof] = forget
	return nil
}

// RefusalReason names a Verify error for the metric of refused forwards.
func RefusalReason(err error) string {
	if r, ok := proofRefusalFor[err]; ok {
		return r
	}
	return "invalid"
}
