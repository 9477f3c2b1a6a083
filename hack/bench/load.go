package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// loadResult is the outcome of a closed-loop HTTP load.
type loadResult struct {
	requests int
	rps      float64
	lat      latency
	codes    map[int]int
}

func (r loadResult) String() string {
	return fmt.Sprintf("%.0f req/s, %s, codes %v", r.rps, r.lat, r.codes)
}

// load sends GET path to addr from workers keep-alive connections, each
// waiting for its answer before the next request, for d. The client is lean
// (requests written as bytes, answers parsed by net/http) so that on a small
// machine it takes as little CPU from the server as it can.
func load(ctx context.Context, addr, path string, workers int, d time.Duration) (loadResult, error) {
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: bench\r\n\r\n")
	var (
		mu    sync.Mutex
		all   []time.Duration
		codes = map[int]int{}
		first error
		wg    sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lats := make([]time.Duration, 0, 1<<15)
			local := map[int]int{}
			err := func() error {
				conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				if err != nil {
					return err
				}
				defer conn.Close()
				br := bufio.NewReaderSize(conn, 16<<10)
				for {
					t0 := time.Now()
					if t0.After(deadline) || ctx.Err() != nil {
						return nil
					}
					if _, err := conn.Write(req); err != nil {
						return err
					}
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						return err
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					lats = append(lats, time.Since(t0))
					local[resp.StatusCode]++
				}
			}()
			mu.Lock()
			defer mu.Unlock()
			all = append(all, lats...)
			for k, v := range local {
				codes[k] += v
			}
			if err != nil && first == nil {
				first = err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return loadResult{}, first
	}
	return loadResult{requests: len(all), rps: float64(len(all)) / elapsed.Seconds(), lat: summarize(all), codes: codes}, nil
}
