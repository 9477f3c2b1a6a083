package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/pkg/share"
)

const tokenNamespace = "bench-tokens"

// tokenLoad loads the listener's token resolution: each target in rounds
// that alternate the targets, the best round counting, for it can lose its
// cores to a neighbour, never gain more than it has.
type tokenLoad struct {
	addr     string
	workers  int
	duration time.Duration
	// targets are the paths loaded, by name: /healthz (the HTTP floor of
	// the listener), a valid token's /info and an unknown token's.
	targets []tokenTarget
	// rounds are the req/s of every round, by label and target.
	rounds map[string][]float64
}

type tokenTarget struct{ name, path string }

// tokenRounds is how many rounds each target is loaded.
const tokenRounds = 3

func (b *bench) newTokenLoad() (*tokenLoad, error) {
	unknown, err := share.NewToken()
	if err != nil {
		return nil, err
	}
	return &tokenLoad{addr: b.sys.shareAddr, workers: b.o.loadWorkers, duration: b.o.loadDuration, rounds: map[string][]float64{},
		targets: []tokenTarget{{"healthz", "/healthz"}, {"valid", infoPath(b.sys.agents["echo"].token)}, {"unknown", infoPath(unknown)}}}, nil
}

func infoPath(token string) string { return "/s/" + token + "/info" }

// measure loads each target, under label, and returns the best round of
// each; every answer must be the one its token deserves.
func (l *tokenLoad) measure(ctx context.Context, label string) (map[string]loadResult, error) {
	out := map[string]loadResult{}
	for range tokenRounds {
		for _, t := range l.targets {
			r, err := load(ctx, l.addr, t.path, l.workers, l.duration)
			if err != nil {
				return nil, fmt.Errorf("%s load on %s: %w", label, t.name, err)
			}
			step("  %s, %s: %s", label, t.name, r)
			l.rounds[label+"/"+t.name] = append(l.rounds[label+"/"+t.name], r.rps)
			if r.rps > out[t.name].rps {
				out[t.name] = r
			}
		}
	}
	return out, checkCodes(out)
}

// tokenFigures measures figure 4: /s/<token>/info with few share Secrets
// and with many in the listener's cache, for a valid token and an unknown
// one, against /healthz of the same listener (the HTTP floor of the server).
func (b *bench) tokenFigures(ctx context.Context) error {
	s, o := b.sys, b.o
	l, err := b.newTokenLoad()
	if err != nil {
		return err
	}
	// Warm the listener up (connections, buffers, the heap's size) before
	// the first figure, so that the first is not the slower for it.
	if _, err := load(ctx, s.shareAddr, l.targets[1].path, o.loadWorkers, 2*time.Second); err != nil {
		return err
	}
	existing := &corev1.SecretList{}
	if err := s.admin.List(ctx, existing, client.MatchingLabels(share.SecretSelector())); err != nil {
		return err
	}
	few := len(existing.Items)
	step("figure 4: token resolution with %d share Secrets", few)
	small, err := l.measure(ctx, secretsLabel(few))
	if err != nil {
		return err
	}
	step("figure 4: creating %d share Secrets", o.secrets)
	rssBefore, _ := rssBytes(s.server.Pid())
	start := time.Now()
	if err := s.addShareSecrets(ctx, o.secrets); err != nil {
		return err
	}
	// The control plane digests the new objects for a while (its
	// controllers see 10,000 new Secrets): measure once it is done.
	quiesce(30 * time.Second)
	rssAfter, _ := settledRSS(s.server.Pid(), time.Second)
	step("  created and cached in %s; server RSS %s → %s", time.Since(start).Round(time.Millisecond), fmtMiB(float64(rssBefore)), fmtMiB(float64(rssAfter)))
	// The rev Agent's link, enabled after the Secrets, is one more.
	many := few + o.secrets + 1
	big, err := l.measure(ctx, secretsLabel(many))
	if err != nil {
		return err
	}
	b.reportTokens(l, few, many, small, big)
	b.r.add(row{fig: "4", measure: fmt.Sprintf("server RSS with %d more share Secrets cached", o.secrets),
		baseline: fmtMiB(float64(rssBefore)), ours: fmtMiB(float64(rssAfter)),
		ratio:  fmt.Sprintf("+%s per Secret", fmtKiB(float64(rssAfter-rssBefore)/float64(o.secrets))),
		spread: "one measurement each"})
	b.r.note("figure 4 load: %d keep-alive connections in a closed loop for %s per figure, from the benchmark process on the same %d cores as the server; best of three rounds",
		o.loadWorkers, o.loadDuration, numCPU())
	return nil
}

func secretsLabel(n int) string { return fmt.Sprintf("%d Secrets", n) }

// addShareSecrets creates n share Secrets in a namespace of their own and
// waits until the listener has them all in its cache.
func (s *system) addShareSecrets(ctx context.Context, n int) error {
	if err := s.cp.CreateNamespace(ctx, tokenNamespace); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i := range n {
		g.Go(func() error {
			token, err := share.NewToken()
			if err != nil {
				return err
			}
			agent := "agent-" + strconv.Itoa(i)
			// Shaped as the share Secret of an Agent that is not there: the
			// listener indexes it and resolves its token to nothing. No
			// owner reference, or the garbage collector would delete it.
			return s.admin.Create(gctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{
					Name: share.SecretName(agent), Namespace: tokenNamespace,
					Labels:      map[string]string{share.LabelShareSecret: "true", share.LabelAgent: agent},
					Annotations: map[string]string{share.AnnotationAgentUID: string(uuid.NewUUID())},
				},
				Type: corev1.SecretTypeOpaque,
				Data: map[string][]byte{share.SecretTokenKey: []byte(token)},
			})
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// A link enabled after the last Secret works once the listener's watch
	// has brought it, and so every Secret before it.
	marker := s.agents["rev"]
	var err error
	if marker.token, _, err = s.enable(ctx, marker.key); err != nil {
		return err
	}
	if err := s.waitLink(ctx, marker.token, http.StatusOK); err != nil {
		return err
	}
	return s.disable(ctx, marker.key)
}

// reportTokens adds the rows of figure 4 for each kind of token.
func (b *bench) reportTokens(l *tokenLoad, few, many int, small, big map[string]loadResult) {
	fewLabel, manyLabel := secretsLabel(few), secretsLabel(many)
	h, h0 := big["healthz"], small["healthz"]
	perSecond := func(r float64) string { return fmt.Sprintf("%.0f", r) }
	for _, kind := range []string{"valid", "unknown"} {
		a, z := small[kind], big[kind]
		// Each rate is taken as a share of /healthz of the same listener
		// measured alongside it, so that what slows the whole process or
		// machine between the two measurements (it takes a minute to add
		// the Secrets) cancels out and what remains is the cost of the
		// resolution itself.
		na, nz := a.rps/h0.rps, z.rps/h.rps
		b.r.add(row{fig: "4", measure: fmt.Sprintf("/info, %s token: req/s with %d vs %d share Secrets, as a share of /healthz (O(1)?)", kind, many, few),
			baseline: fmt.Sprintf("%d Secrets %.0f req/s (%.2f)", few, a.rps, na), ours: fmt.Sprintf("%d Secrets %.0f req/s (%.2f)", many, z.rps, nz),
			ratio:  fmtRatio(nz/na) + " (raw " + fmtRatio(z.rps/a.rps) + ")",
			spread: fmtSpread(l.rounds[fewLabel+"/"+kind], l.rounds[manyLabel+"/"+kind], perSecond) + " req/s",
			goal:   "flat (≥ 0.90)", met: yesNo(nz/na >= 0.9)})
		b.r.add(row{fig: "4", measure: fmt.Sprintf("/info, %s token, %d Secrets: req/s and p99 vs /healthz", kind, many),
			baseline: fmt.Sprintf("/healthz %.0f req/s, p99 %s ms", h.rps, fmtMs(h.lat.p99)),
			ours:     fmt.Sprintf("%.0f req/s, p99 %s ms", z.rps, fmtMs(z.lat.p99)),
			ratio:    fmtRatio(z.rps / h.rps),
			spread:   fmtSpread(l.rounds[manyLabel+"/healthz"], l.rounds[manyLabel+"/"+kind], perSecond) + " req/s",
			goal:     "≥ 10,000 req/s", met: yesNo(z.rps >= 10000)})
	}
}

// checkCodes makes sure every answer was the one the token deserves.
func checkCodes(rs map[string]loadResult) error {
	for name, want := range map[string]int{"healthz": http.StatusOK, "valid": http.StatusOK, "unknown": http.StatusNotFound} {
		if rs[name].codes[want] != rs[name].requests {
			return fmt.Errorf("%s answered %v, want only %d", name, rs[name].codes, want)
		}
	}
	return nil
}
