package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/internal/testenv"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

// replicaServer is one replica of the share listener with its name and
// address.
type replicaServer struct {
	name, addr string
	srv        *testenv.AggregatedAPIServer
}

// replicaPair is two replicas of the share listener sharing sessions
// through Leases, as two pods of the Deployment do: the owner starts the
// sessions of figure 8, the forwarder forwards its pages to the owner. They
// are processes of their own beside the system's listener, which stays a
// single replica, so that the other figures are measured as before.
type replicaPair struct {
	owner, forwarder replicaServer
	// relay is a bare TCP relay process to the owner, in the forwarder's
	// place, and relayProc its process.
	relay     replicaServer
	relayProc *testenv.Process
	// admin reads the session Leases.
	admin client.Client
}

func (p *replicaPair) stop() {
	for _, r := range []replicaServer{p.owner, p.forwarder} {
		if r.srv != nil {
			r.srv.Stop()
		}
	}
	if p.relayProc != nil {
		p.relayProc.Stop()
	}
}

// startReplicaPair starts the two replicas, then points the APIService
// back at the system's server, which each replica claimed when it started.
func (s *system) startReplicaPair(ctx context.Context) (_ *replicaPair, err error) {
	p := &replicaPair{admin: s.admin}
	defer func() {
		if err != nil {
			p.stop()
		}
	}()
	if p.owner, err = s.startReplica(ctx, "replica-a"); err != nil {
		return nil, err
	}
	if p.forwarder, err = s.startReplica(ctx, "replica-b"); err != nil {
		return nil, err
	}
	if p.relay, p.relayProc, err = startTCPRelay(s.o, p.owner.addr); err != nil {
		return nil, err
	}
	if err := s.cp.RegisterAPIService(ctx, subresourcesv1alpha1.GroupName, "v1alpha1", testenv.SystemNamespace,
		testenv.APIServiceName, s.server.Port, s.server.CAPEM); err != nil {
		return nil, err
	}
	return p, s.cp.WaitForAPIService(ctx, "v1alpha1."+subresourcesv1alpha1.GroupName, time.Minute)
}

// startReplica starts the aggregated API server as one replica of several:
// its own name, and its address on loopback advertised to the others.
func (s *system) startReplica(ctx context.Context, name string) (replicaServer, error) {
	o := s.o
	addr, err := freeAddr()
	if err != nil {
		return replicaServer{}, err
	}
	// Its kubeconfig and certificate go to a folder of its own, not over
	// the system's server's.
	dir := filepath.Join(o.work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return replicaServer{}, err
	}
	step("starting the share listener replica %s on %s", name, addr)
	srv, err := testenv.StartAggregatedAPIServer(ctx, s.cp, testenv.ServerOptions{
		Bin: filepath.Join(o.binDir, "aggregated-apiserver"), Name: name, Dir: dir, LogDir: o.logDir, ShareAddr: addr,
		Args: append(listenerArgs(),
			"--share-advertise-address=127.0.0.1",
			"--share-replica-name="+name,
			"--share-lease-namespace="+testenv.SystemNamespace),
	})
	if err != nil {
		return replicaServer{}, fmt.Errorf("replica %s: %w", name, err)
	}
	return replicaServer{name: name, addr: addr, srv: srv}, nil
}

// dial opens a page of token through the replica, with the replica's own
// origin, as a page served by it would.
func (r replicaServer) dial(ctx context.Context, token string, out sink) (*wsTerminal, error) {
	t, code, err := dialWS(ctx, "ws://"+r.addr+share.Path(token)+"/terminal", "http://"+r.addr, out)
	if err != nil {
		return nil, fmt.Errorf("page through %s (HTTP %d): %w", r.name, code, err)
	}
	return t, nil
}

// dialReady opens a page through the replica and waits for the session's
// ready marker (the first output, shown again to a page that joins); the
// output after it goes to out, or nowhere when out is nil.
func (r replicaServer) dialReady(ctx context.Context, token string, out sink) (*wsTerminal, error) {
	ready := make(chan struct{})
	gate := func(p []byte) {
		select {
		case <-ready:
			if out != nil {
				out(p)
			}
		default:
			close(ready)
		}
	}
	t, err := r.dial(ctx, token, gate)
	if err != nil {
		return nil, err
	}
	select {
	case <-ready:
		return t, nil
	case <-t.done():
		err = errors.New("the session ended before it was ready")
	case <-time.After(30 * time.Second):
		err = errors.New("the session was not ready within 30s")
	}
	t.close()
	return nil, fmt.Errorf("page through %s: %w", r.name, err)
}

// heldPage is a page measured in a session that a holder page on the
// owner started first: the session is the owner's, whichever replica the
// measured page goes through. Closing it closes both.
type heldPage struct {
	*wsTerminal
	holder *wsTerminal
}

func (p *heldPage) close() {
	p.wsTerminal.close()
	p.holder.close()
}

// catTrigger is the byte that makes the relay's cat command start.
var catTrigger = []byte{'g'}

// relayCatCommand waits for a typed byte before it writes the payload:
// the session is started by the holder page, and the payload must come
// once the measured page has joined it.
func relayCatCommand(payload string) []string {
	return []string{"sh", "-c", "stty raw -echo; printf " + readyMarker + "; dd bs=1 count=1 status=none >/dev/null; exec cat " + payload}
}

// relayLink is a link of figure 8 and the session Lease of its Agent.
type relayLink struct {
	token string
	agent types.NamespacedName
	lease types.NamespacedName
}

// holdNew opens the holder page of a new session of link on the owner.
// The session before it must be gone first: its command has exited once
// its last output came, but a page that came before the owner dropped it
// would join it, and end with it. The owner deletes the Lease after it has
// dropped the session.
func (p *replicaPair) holdNew(ctx context.Context, link relayLink) (*wsTerminal, error) {
	err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		err := p.admin.Get(ctx, link.lease, &coordinationv1.Lease{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		return nil, fmt.Errorf("the session Lease %s is still there: %w", link.lease, err)
	}
	return p.owner.dialReady(ctx, link.token, nil)
}

// openers return the echo and cat openers of a page through via, in a
// session the owner holds.
func (p *replicaPair) openers(via replicaServer, echoLink, catLink relayLink) (echo, cat opener) {
	echo = func(ctx context.Context, out sink) (terminal, error) {
		holder, err := p.holdNew(ctx, echoLink)
		if err != nil {
			return nil, err
		}
		// The echoer waits for the ready marker itself.
		page, err := via.dial(ctx, echoLink.token, out)
		if err != nil {
			holder.close()
			return nil, err
		}
		return &heldPage{wsTerminal: page, holder: holder}, nil
	}
	cat = func(ctx context.Context, out sink) (terminal, error) {
		holder, err := p.holdNew(ctx, catLink)
		if err != nil {
			return nil, err
		}
		page, err := via.dialReady(ctx, catLink.token, out)
		if err != nil {
			holder.close()
			return nil, err
		}
		held := &heldPage{wsTerminal: page, holder: holder}
		if err := page.write(catTrigger); err != nil {
			held.close()
			return nil, err
		}
		return held, nil
	}
	return echo, cat
}

// waitLinks waits until both replicas answer a link.
func (p *replicaPair) waitLinks(ctx context.Context, tokens ...string) error {
	for _, r := range []replicaServer{p.owner, p.forwarder} {
		for _, t := range tokens {
			if err := waitLinkAt(ctx, r.addr, t, http.StatusOK, 20*time.Millisecond); err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
		}
	}
	return nil
}
