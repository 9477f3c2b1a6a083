package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

// enablePace is the period of the enable cycles of figure 5.
const enablePace = 250 * time.Millisecond

// enableFigures measures figure 5: agents/share create through the
// kube-apiserver and the APIService against a plain Secret create through
// the kube-apiserver alone, and the time from delete to the close of an open
// session against the time the same change takes to reach a watch (the
// earliest the listener can know of it).
func (b *bench) enableFigures(ctx context.Context) error {
	s, o := b.sys, b.o
	rev := s.agents["rev"]
	cs, err := kubernetes.NewForConfig(s.adminC)
	if err != nil {
		return err
	}
	userClient, err := kubernetes.NewForConfig(s.user)
	if err != nil {
		return err
	}
	scheme := s.admin.Scheme()
	wc, err := client.NewWithWatch(s.adminC, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	// The listener re-checks a session when the Agent or its Secret changes;
	// the first such event after the delete is the floor of revocation.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seen := make(chan time.Time, 64)
	secrets, err := cs.CoreV1().Secrets(benchNamespace).Watch(wctx, metav1.ListOptions{LabelSelector: share.LabelAgent + "=" + rev.key.Name})
	if err != nil {
		return err
	}
	defer secrets.Stop()
	agents, err := wc.Watch(wctx, &kubeopencodev1alpha1.AgentList{}, client.InNamespace(benchNamespace),
		client.MatchingFields{"metadata.name": rev.key.Name})
	if err != nil {
		return err
	}
	defer agents.Stop()
	go func() {
		for ev := range secrets.ResultChan() {
			if ev.Type == watch.Deleted {
				seen <- time.Now()
			}
		}
	}()
	go func() {
		for ev := range agents.ResultChan() {
			if a, ok := ev.Object.(*kubeopencodev1alpha1.Agent); ok && ev.Type == watch.Modified && (a.Spec.Share == nil || !a.Spec.Share.Enabled) {
				seen <- time.Now()
			}
		}
	}()
	drain := func() {
		for {
			select {
			case <-seen:
			default:
				return
			}
		}
	}

	step("figure 5: %d enables, sessions and disables", o.enableSamples)
	var createLat, enableLat, usableLat, revokeLat, watchLat []time.Duration
	// One cycle makes about a dozen requests of the aggregated API server's
	// own client, whose rate limit is 50 per second (burst 100): cycles
	// are paced so that the figure is the latency of a request, not the
	// wait in that limiter.
	pace := time.NewTicker(enablePace)
	defer pace.Stop()
	for i := range o.enableSamples {
		<-pace.C
		// Baseline: a write through the kube-apiserver alone, as the same user.
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("baseline-%d", i)}, Data: map[string][]byte{"k": []byte("v")}}
		t := time.Now()
		if _, err := userClient.CoreV1().Secrets(benchNamespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
			return err
		}
		createLat = append(createLat, time.Since(t))
		_ = userClient.CoreV1().Secrets(benchNamespace).Delete(ctx, secret.Name, metav1.DeleteOptions{})

		t = time.Now()
		token, _, err := s.enable(ctx, rev.key)
		if err != nil {
			return err
		}
		enableLat = append(enableLat, time.Since(t))
		if err := s.waitLinkEvery(ctx, token, http.StatusOK, 2*time.Millisecond); err != nil {
			return err
		}
		usableLat = append(usableLat, time.Since(t))

		r := newReadySink()
		term, err := s.dialShare(ctx, token, r.sink)
		if err != nil {
			return err
		}
		select {
		case <-r.ready:
		case <-time.After(time.Minute):
			term.close()
			return fmt.Errorf("session %d not ready", i)
		}
		drain()
		t = time.Now()
		if err := s.disable(ctx, rev.key); err != nil {
			term.close()
			return err
		}
		select {
		case <-term.done():
			revokeLat = append(revokeLat, time.Since(t))
		case <-time.After(30 * time.Second):
			term.close()
			return fmt.Errorf("session %d outlived the disable by 30s", i)
		}
		if st := term.status.Load(); st == nil || st.Reason != "Revoked" {
			return fmt.Errorf("session %d closed with %+v, want Revoked", i, st)
		}
		select {
		case at := <-seen:
			watchLat = append(watchLat, at.Sub(t))
		case <-time.After(10 * time.Second):
			return fmt.Errorf("no watch event for disable %d", i)
		}
		term.close()
	}
	c, e, u := summarize(createLat), summarize(enableLat), summarize(usableLat)
	rv, w := summarize(revokeLat), summarize(watchLat)
	step("  Secret create %s; enable %s; link usable %s; watch %s; revocation %s", c, e, u, w, rv)
	// Every cycle is a repetition: the spread is of the samples.
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
	return nil
}
