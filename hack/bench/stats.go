package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// percentile returns the p-th percentile (0..100) of xs by the nearest-rank
// method; xs need not be sorted.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

func median(xs []float64) float64 { return percentile(xs, 50) }

// durations converts latencies to milliseconds.
func millis(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

// latency summarises round trips.
type latency struct {
	n        int
	p50, p99 float64 // milliseconds
}

func summarize(ds []time.Duration) latency {
	ms := millis(ds)
	return latency{n: len(ds), p50: percentile(ms, 50), p99: percentile(ms, 99)}
}

func (l latency) String() string {
	return fmt.Sprintf("p50 %s / p99 %s ms", fmtMs(l.p50), fmtMs(l.p99))
}

func fmtMs(ms float64) string {
	switch {
	case math.IsNaN(ms):
		return "n/a"
	case ms < 10:
		return fmt.Sprintf("%.2f", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f", ms)
	default:
		return fmt.Sprintf("%.0f", ms)
	}
}

func fmtKiB(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }

func fmtMiB(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

func fmtRatio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", r)
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// fmtDelta formats a difference in milliseconds with its sign.
func fmtDelta(ms float64) string {
	if ms < 0 {
		return "−" + fmtMs(-ms) + " ms"
	}
	return "+" + fmtMs(ms) + " ms"
}

// fmtRange formats the smallest and largest of xs with f, as "a–b", or
// "n/a" when there are none.
func fmtRange(xs []float64, f func(float64) string) string {
	if len(xs) == 0 {
		return "n/a"
	}
	return f(slices.Min(xs)) + "–" + f(slices.Max(xs))
}

// fmtSpread is the spread cell of a row: the range of the baseline's
// repetitions and of ours, each formatted with f.
func fmtSpread(baseline, ours []float64, f func(float64) string) string {
	return fmtRange(baseline, f) + "; " + fmtRange(ours, f)
}

// fmtDeltaRange formats the smallest and largest of differences in
// milliseconds with their signs, as "−0.10 to +0.41 ms".
func fmtDeltaRange(ms []float64) string {
	if len(ms) == 0 {
		return "n/a"
	}
	lo, hi := fmtDelta(slices.Min(ms)), fmtDelta(slices.Max(ms))
	return strings.TrimSuffix(lo, " ms") + " to " + hi
}
