package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

// enablePace is the period of the enable cycles of figure 5.
const enablePace = 250 * time.Millisecond

// revocationWatch reports when a watch of the harness first sees a link
// go: the Agent's update that disables it or its Secret's deletion. The
// listener re-checks a session when either changes, so the first such
// event after a delete is the floor of revocation.
type revocationWatch struct {
	cancel context.CancelFunc
	seen   chan time.Time
}

func (s *system) watchRevocations(ctx context.Context, key types.NamespacedName) (_ *revocationWatch, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		if err != nil {
			cancel()
		}
	}()
	w := &revocationWatch{cancel: cancel, seen: make(chan time.Time, 64)}
	cs, err := kubernetes.NewForConfig(s.adminC)
	if err != nil {
		return nil, err
	}
	secrets, err := cs.CoreV1().Secrets(key.Namespace).Watch(ctx, metav1.ListOptions{LabelSelector: share.LabelAgent + "=" + key.Name})
	if err != nil {
		return nil, err
	}
	wc, err := client.NewWithWatch(s.adminC, client.Options{Scheme: s.admin.Scheme()})
	if err != nil {
		secrets.Stop()
		return nil, err
	}
	agents, err := wc.Watch(ctx, &kubeopencodev1alpha1.AgentList{}, client.InNamespace(key.Namespace), client.MatchingFields{"metadata.name": key.Name})
	if err != nil {
		secrets.Stop()
		return nil, err
	}
	go w.forward(ctx, secrets, func(ev watch.Event) bool { return ev.Type == watch.Deleted })
	go w.forward(ctx, agents, func(ev watch.Event) bool {
		a, ok := ev.Object.(*kubeopencodev1alpha1.Agent)
		return ok && ev.Type == watch.Modified && (a.Spec.Share == nil || !a.Spec.Share.Enabled)
	})
	return w, nil
}

// forward sends the time of each event of wi that revokes until ctx ends.
func (w *revocationWatch) forward(ctx context.Context, wi watch.Interface, revokes func(watch.Event) bool) {
	defer wi.Stop()
	for {
		select {
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return
			}
			if revokes(ev) {
				select {
				case w.seen <- time.Now():
				default:
				}
			}
		case <-ctx.Done():
			return
		}
	}
}

// drain forgets the events seen so far.
func (w *revocationWatch) drain() {
	for {
		select {
		case <-w.seen:
		default:
			return
		}
	}
}

func (w *revocationWatch) stop() { w.cancel() }

// enableSample is what one enable cycle measured.
type enableSample struct {
	// create is the baseline: a plain Secret create by the same user.
	create time.Duration
	// enable is the agents/share create; usable, until the link answers.
	enable, usable time.Duration
	// revoke is from the delete until the open session closed; watch, until
	// a watch saw the change.
	revoke, watch time.Duration
}

// enableFigures measures figure 5: agents/share create through the
// kube-apiserver and the APIService against a plain Secret create through
// the kube-apiserver alone, and the time from delete to the close of an open
// session against the time the same change takes to reach a watch (the
// earliest the listener can know of it).
func (b *bench) enableFigures(ctx context.Context) error {
	s, o := b.sys, b.o
	userClient, err := kubernetes.NewForConfig(s.user)
	if err != nil {
		return err
	}
	w, err := s.watchRevocations(ctx, s.agents["rev"].key)
	if err != nil {
		return err
	}
	defer w.stop()
	step("figure 5: %d enables, sessions and disables", o.enableSamples)
	// One cycle makes about a dozen requests of the aggregated API server's
	// own client, whose rate limit is 50 per second (burst 100): cycles
	// are paced so that the figure is the latency of a request, not the
	// wait in that limiter.
	pace := time.NewTicker(enablePace)
	defer pace.Stop()
	var samples []enableSample
	for i := range o.enableSamples {
		<-pace.C
		sample, err := b.enableCycle(ctx, userClient, w, i)
		if err != nil {
			return err
		}
		samples = append(samples, sample)
	}
	b.reportEnable(samples)
	return nil
}

// enableCycle creates and deletes a Secret as the user (the baseline), then
// enables the rev Agent's link, opens a session on it, and disables it.
func (b *bench) enableCycle(ctx context.Context, user kubernetes.Interface, w *revocationWatch, i int) (enableSample, error) {
	s := b.sys
	rev := s.agents["rev"]
	var sample enableSample
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("baseline-%d", i)}, Data: map[string][]byte{"k": []byte("v")}}
	t := time.Now()
	if _, err := user.CoreV1().Secrets(benchNamespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		return sample, err
	}
	sample.create = time.Since(t)
	_ = user.CoreV1().Secrets(benchNamespace).Delete(ctx, secret.Name, metav1.DeleteOptions{})

	t = time.Now()
	token, _, err := s.enable(ctx, rev.key)
	if err != nil {
		return sample, err
	}
	sample.enable = time.Since(t)
	if err := s.waitLinkEvery(ctx, token, http.StatusOK, 2*time.Millisecond); err != nil {
		return sample, err
	}
	sample.usable = time.Since(t)

	r := newReadySink()
	term, err := s.dialShare(ctx, token, r.sink)
	if err != nil {
		return sample, err
	}
	defer term.close()
	select {
	case <-r.ready:
	case <-time.After(time.Minute):
		return sample, fmt.Errorf("session %d not ready", i)
	}
	w.drain()
	t = time.Now()
	if err := s.disable(ctx, rev.key); err != nil {
		return sample, err
	}
	select {
	case <-term.done():
		sample.revoke = time.Since(t)
	case <-time.After(30 * time.Second):
		return sample, fmt.Errorf("session %d outlived the disable by 30s", i)
	}
	if st := term.status.Load(); st == nil || st.Reason != "Revoked" {
		return sample, fmt.Errorf("session %d closed with %+v, want Revoked", i, st)
	}
	select {
	case at := <-w.seen:
		sample.watch = at.Sub(t)
	case <-time.After(10 * time.Second):
		return sample, fmt.Errorf("no watch event for disable %d", i)
	}
	return sample, nil
}

// reportEnable adds the rows of figure 5. Every cycle is a repetition: the
// min–max is of the samples.
func (b *bench) reportEnable(samples []enableSample) {
	pick := func(f func(enableSample) time.Duration) []time.Duration {
		out := make([]time.Duration, 0, len(samples))
		for _, s := range samples {
			out = append(out, f(s))
		}
		return out
	}
	createLat := pick(func(s enableSample) time.Duration { return s.create })
	enableLat := pick(func(s enableSample) time.Duration { return s.enable })
	usableLat := pick(func(s enableSample) time.Duration { return s.usable })
	revokeLat := pick(func(s enableSample) time.Duration { return s.revoke })
	watchLat := pick(func(s enableSample) time.Duration { return s.watch })
	c, e, u := summarize(createLat), summarize(enableLat), summarize(usableLat)
	rv, w := summarize(revokeLat), summarize(watchLat)
	step("  Secret create %s; enable %s; link usable %s; watch %s; revocation %s", c, e, u, w, rv)
	spread := func(baseline, ours []time.Duration) string {
		return fmtSpread(millis(baseline), millis(ours), fmtMs) + " ms"
	}
	b.r.add(row{fig: "5", measure: fmt.Sprintf("enable (agents/share create via APIService), %d samples", e.n),
		baseline: "Secret create " + fmtMs(c.p50) + " / " + fmtMs(c.p99) + " ms", ours: "enable " + fmtMs(e.p50) + " / " + fmtMs(e.p99) + " ms",
		ratio: fmtRatio(e.p50/c.p50) + " / " + fmtRatio(e.p99/c.p99), spread: spread(createLat, enableLat)})
	b.r.add(row{fig: "5", measure: "enable until the link answers 200 (p50 / p99)",
		baseline: "Secret create " + fmtMs(c.p50) + " / " + fmtMs(c.p99) + " ms", ours: fmtMs(u.p50) + " / " + fmtMs(u.p99) + " ms",
		ratio: fmtRatio(u.p50/c.p50) + " / " + fmtRatio(u.p99/c.p99), spread: spread(createLat, usableLat)})
	b.r.add(row{fig: "5", measure: "revocation: delete until the open session is closed (p50 / p99)",
		baseline: "watch sees it " + fmtMs(w.p50) + " / " + fmtMs(w.p99) + " ms", ours: fmtMs(rv.p50) + " / " + fmtMs(rv.p99) + " ms",
		ratio: fmtRatio(rv.p50/w.p50) + " / " + fmtRatio(rv.p99/w.p99), spread: spread(watchLat, revokeLat),
		goal: "p99 < 500 ms", met: yesNo(rv.p99 < 500)})
	b.r.note("figure 5: p50 / p99 of %d cycles, one every %s (so p99 is close to the largest); back to back, cycles queue in the aggregated API server's client-side rate limit (50/s)", e.n, enablePace)
}
