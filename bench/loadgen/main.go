// loadgen: an HTTP load generator for the collector bench (bench/collector_bench.py) that
// costs little CPU beside the collector on a shared machine, using only the standard library.
//
// Bodies come one per line from -bodies (each a whole request body, sent as given). Two modes:
//
//   - open (-rate R -n N): request i is due at start + i/R whatever the answers do; its
//     latency is measured from when it was due, so a request that waited for a free
//     connection or for the generator itself counts that wait (no coordinated omission).
//   - closed (-conns C -n N [-duration D]): C connections each send the next body as soon as
//     the previous answer arrived (throughput; a flood), until N were sent or D has passed.
//
// One JSON object per request goes to stdout: due, sent and answered times (ns since the
// start), the status, and the answer's Server-Timing header when the collector sends one.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

type record struct {
	Index  int    `json:"i"`
	DueNs  int64  `json:"due"`
	SentNs int64  `json:"sent"`
	DoneNs int64  `json:"done"`
	Status int    `json:"status"`
	Timing string `json:"timing,omitempty"`
	Error  string `json:"error,omitempty"`
	Retry  string `json:"retry,omitempty"`
}

func readBodies(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var bodies [][]byte
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 64<<20)
	for scanner.Scan() {
		line := scanner.Bytes()
		if len(line) > 0 {
			bodies = append(bodies, append([]byte(nil), line...))
		}
	}
	return bodies, scanner.Err()
}

func main() {
	url := flag.String("url", "", "the collector's endpoint, e.g. http://127.0.0.1:8088/v1/batch")
	bodiesPath := flag.String("bodies", "", "request bodies, one per line")
	auth := flag.String("auth", "", "the Authorization header's value")
	mode := flag.String("mode", "open", "open (a fixed schedule) or closed (back to back)")
	rate := flag.Float64("rate", 100, "open: requests per second")
	n := flag.Int("n", 100, "requests to send")
	conns := flag.Int("conns", 64, "connections at most")
	timeout := flag.Duration("timeout", 30*time.Second, "one request's time limit")
	duration := flag.Duration("duration", 0, "closed: stop sending after this long (0: never)")
	flag.Parse()

	bodies, err := readBodies(*bodiesPath)
	if err != nil || len(bodies) == 0 {
		fmt.Fprintf(os.Stderr, "loadgen: no bodies in %q: %v\n", *bodiesPath, err)
		os.Exit(2)
	}
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxConnsPerHost:     *conns,
		MaxIdleConnsPerHost: *conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	client := &http.Client{Transport: transport, Timeout: *timeout}
	records := make([]record, *n)
	start := time.Now()

	send := func(i int, due time.Duration) {
		r := &records[i]
		r.Index = i
		r.DueNs = int64(due)
		r.SentNs = int64(time.Since(start))
		req, _ := http.NewRequest("POST", *url, bytes.NewReader(bodies[i%len(bodies)]))
		req.Header.Set("Content-Type", "application/json")
		if *auth != "" {
			req.Header.Set("Authorization", *auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			r.DoneNs = int64(time.Since(start))
			r.Error = err.Error()
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		r.DoneNs = int64(time.Since(start))
		r.Status = resp.StatusCode
		r.Timing = resp.Header.Get("Server-Timing")
		r.Retry = resp.Header.Get("Retry-After")
	}

	var wg sync.WaitGroup
	var next atomic.Int64 // closed: the next request's index
	switch *mode {
	case "open":
		interval := time.Duration(float64(time.Second) / *rate)
		for i := 0; i < *n; i++ {
			due := time.Duration(i) * interval
			if wait := due - time.Since(start); wait > 0 {
				time.Sleep(wait)
			}
			wg.Add(1)
			go func(i int, due time.Duration) {
				defer wg.Done()
				send(i, due)
			}(i, due)
		}
	case "closed":
		for c := 0; c < *conns; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					if *duration > 0 && time.Since(start) >= *duration {
						return
					}
					i := int(next.Add(1) - 1)
					if i >= *n {
						return
					}
					send(i, time.Since(start))
				}
			}()
		}
	default:
		fmt.Fprintf(os.Stderr, "loadgen: unknown mode %q\n", *mode)
		os.Exit(2)
	}
	wg.Wait()
	if sent := int(next.Load()); *mode == "closed" && sent < len(records) {
		records = records[:sent] // stopped by -duration: the rest were never sent
	}
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for i := range records {
		if err := enc.Encode(&records[i]); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}
