package main

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Figure 3 says where a session's memory goes, from two profiles of the
// listener taken before the sessions opened and with them open: which
// goroutines each session adds (exact), and which allocation sites hold its
// heap (sampled, so only worth reading at a small memprofilerate; see
// -profiles). Both are parsed from the runtime's text formats
// (?debug=1), which need no profile decoder.

// genericFrame matches the functions that say little about who holds
// memory or waits: the runtime, the standard library's plumbing and
// gorilla/websocket, used both by our page connections and by client-go's
// exec stream. A stack is named after its first other frame.
var genericFrame = regexp.MustCompile(`^(runtime|internal/.*|sync|bufio|bytes|io|strings|slices|maps|reflect|time|context|net|net/http|crypto/.*|github\.com/gorilla/websocket)\.`)

// siteName shortens a function name for the table's notes.
func siteName(fn string) string {
	for _, prefix := range []string{"github.com/kubeopencode/share/pkg/", "k8s.io/client-go/tools/", "k8s.io/client-go/"} {
		fn = strings.TrimPrefix(fn, prefix)
	}
	return fn
}

// stackSite names a stack of "#\t0xpc\tfunction+0xoff\tfile:line" lines.
func stackSite(frames []string) string {
	first := ""
	for _, fr := range frames {
		fn, _, _ := strings.Cut(fr, "+")
		if first == "" {
			first = fn
		}
		if !genericFrame.MatchString(fn) {
			return siteName(fn)
		}
	}
	return siteName(first)
}

// frameLines returns the function+offset of each "#" line of a record.
func frameLines(lines []string) []string {
	var frames []string
	for _, l := range lines {
		f := strings.Split(l, "\t")
		if len(f) >= 3 && f[0] == "#" {
			frames = append(frames, f[2])
		}
	}
	return frames
}

// records splits a debug=1 profile into its records: a header line and the
// frame lines after it.
func records(text []byte) [][]string {
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "#") && len(out) > 0:
			out[len(out)-1] = append(out[len(out)-1], l)
		case l != "" && l[0] >= '0' && l[0] <= '9':
			out = append(out, []string{l})
		}
	}
	return out
}

// goroutineSites counts the goroutines of a goroutine?debug=1 profile by
// site.
func goroutineSites(text []byte) map[string]float64 {
	sites := map[string]float64{}
	for _, r := range records(text) {
		n, _, ok := strings.Cut(r[0], " @")
		count, err := strconv.Atoi(n)
		if !ok || err != nil {
			continue
		}
		sites[stackSite(frameLines(r[1:]))] += float64(count)
	}
	return sites
}

// heapHeader is the first line of a heap?debug=1 profile; its last number
// is twice the sampling rate (runtime.MemProfileRate).
var heapHeader = regexp.MustCompile(`^heap profile: .* @ heap/(\d+)`)

// heapRecord is "inuse_objects: inuse_bytes [alloc_objects: alloc_bytes] @ pcs".
var heapRecord = regexp.MustCompile(`^(\d+): (\d+) \[\d+: \d+\] @`)

// heapSites sums the bytes in use of a heap?debug=1 profile by allocation
// site, scaled up for sampling as pprof does.
func heapSites(text []byte) map[string]float64 {
	rate := 0.0
	if m := heapHeader.FindSubmatch(text); m != nil {
		r, _ := strconv.ParseFloat(string(m[1]), 64)
		rate = r / 2
	}
	sites := map[string]float64{}
	for _, r := range records(text) {
		m := heapRecord.FindStringSubmatch(r[0])
		if m == nil {
			continue
		}
		objects, _ := strconv.ParseFloat(m[1], 64)
		size, _ := strconv.ParseFloat(m[2], 64)
		if objects == 0 {
			continue
		}
		if rate > 0 {
			size /= 1 - math.Exp(-size/objects/rate)
		}
		sites[stackSite(frameLines(r[1:]))] += size
	}
	return sites
}

// siteDelta is what one session adds at a site.
type siteDelta struct {
	site string
	per  float64
}

// perSession returns what the sites of after hold beyond before, per
// session, largest first, leaving out what moves by less than min per
// session.
func perSession(before, after map[string]float64, n int, min float64) []siteDelta {
	var out []siteDelta
	for site, v := range after {
		if d := (v - before[site]) / float64(n); d >= min {
			out = append(out, siteDelta{site, d})
		}
	}
	slices.SortFunc(out, func(a, b siteDelta) int { return cmp.Or(cmp.Compare(b.per, a.per), strings.Compare(a.site, b.site)) })
	return out
}

// fmtSites lists the first max sites with f.
func fmtSites(ds []siteDelta, max int, f func(float64) string) string {
	var parts []string
	for i, d := range ds {
		if i == max {
			parts = append(parts, fmt.Sprintf("%d more", len(ds)-max))
			break
		}
		parts = append(parts, f(d.per)+" "+d.site)
	}
	return strings.Join(parts, ", ")
}
