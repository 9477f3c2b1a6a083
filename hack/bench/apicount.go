package main

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// apiCounts are the kube-apiserver's requests so far, by "verb resource"
// (with "/subresource" when there is one), from its apiserver_request_total.
type apiCounts map[string]float64

// counted says whether figure 6 counts the requests on a resource: those
// the controller and the write floor work on. Leases (leader election, off
// in the bench) are left out.
func counted(resource string) bool {
	switch resource {
	case "agents", "deployments", "secrets", "events":
		return true
	}
	return false
}

var metricLabel = regexp.MustCompile(`(\w+)="([^"]*)"`)

// readAPICounts reads the kube-apiserver's request counter.
func readAPICounts(ctx context.Context, cfg *rest.Config) (apiCounts, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the kube-apiserver's metrics: %w", err)
	}
	out := apiCounts{}
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, "apiserver_request_total{")
		if !ok {
			continue
		}
		end := strings.LastIndexByte(rest, '}')
		if end < 0 {
			continue
		}
		labels := map[string]string{}
		for _, m := range metricLabel.FindAllStringSubmatch(rest[:end], -1) {
			labels[m[1]] = m[2]
		}
		if !counted(labels["resource"]) || labels["verb"] == "WATCH" || labels["verb"] == "LIST" {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest[end+1:]), 64)
		if err != nil {
			continue
		}
		key := labels["verb"] + " " + labels["resource"]
		if sub := labels["subresource"]; sub != "" {
			key += "/" + sub
		}
		out[key] += v
	}
	return out, nil
}

// since returns the requests made after before.
func (c apiCounts) since(before apiCounts) apiCounts {
	out := apiCounts{}
	for k, v := range c {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// total is the number of requests.
func (c apiCounts) total() float64 {
	t := 0.0
	for _, v := range c {
		t += v
	}
	return t
}

// perAgent describes the requests per Agent, largest first, such as
// "5.0: POST deployments 1.00, GET agents 1.00, …".
func (c apiCounts) perAgent(n int) string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if c[keys[i]] != c[keys[j]] {
			return c[keys[i]] > c[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.2f", k, c[k]/float64(n)))
	}
	return fmt.Sprintf("%.2f (%s)", c.total()/float64(n), strings.Join(parts, ", "))
}
