package main

import (
	"math"
	"strconv"
	"testing"
)

func TestProfileSites(t *testing.T) {
	goroutines := "goroutine profile: total 5\n" +
		"3 @ 0x1 0x2\n" +
		"#\t0x1\tinternal/poll.runtime_pollWait+0x84\t/go/src/runtime/netpoll.go:351\n" +
		"#\t0x2\tk8s.io/client-go/tools/remotecommand.(*stream).Read+0x10\t/x.go:1\n" +
		"\n" +
		"2 @ 0x3\n" +
		"#\t0x3\tgithub.com/gorilla/websocket.(*Conn).ReadMessage+0x1\t/c.go:1\n" +
		"#\t0x4\tgithub.com/kubeopencode/share/pkg/sharehttp/terminal.(*WebSocketConn).ReadMessage+0x1\t/w.go:1\n"
	heap := "heap profile: 3: 73728 [9: 99999] @ heap/8192\n" +
		"2: 65536 [2: 65536] @ 0x1 0x2\n" +
		"#\t0x1\tio.copyBuffer+0x1\t/io.go:1\n" +
		"#\t0x2\tk8s.io/client-go/tools/remotecommand.(*streamProtocolV2).copyStdin.func1+0x1\t/v2.go:1\n" +
		"\n" +
		"0: 0 [5: 20480] @ 0x5\n" +
		"#\t0x5\tgithub.com/kubeopencode/share/pkg/sharehttp.newThing+0x1\t/t.go:1\n" +
		"1: 4096 [1: 4096] @ 0x6\n" +
		"#\t0x6\truntime.malg+0x1\t/proc.go:1\n"
	for _, tc := range []struct {
		name string
		got  map[string]float64
		want map[string]float64
	}{
		{
			name: "goroutines are named after their first frame outside the plumbing",
			got:  goroutineSites([]byte(goroutines)),
			want: map[string]float64{"remotecommand.(*stream).Read": 3, "sharehttp/terminal.(*WebSocketConn).ReadMessage": 2},
		},
		{
			name: "heap in use is scaled for sampling at half the header's rate; freed records count nothing",
			got:  heapSites([]byte(heap)),
			want: map[string]float64{
				"remotecommand.(*streamProtocolV2).copyStdin.func1": 65536 / (1 - math.Exp(-32768.0/4096)),
				"runtime.malg": 4096 / (1 - math.Exp(-1)),
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.got) != len(tc.want) {
				t.Fatalf("got %v, want %v", tc.got, tc.want)
			}
			for k, v := range tc.want {
				if math.Abs(tc.got[k]-v) > 0.5 {
					t.Errorf("%s: got %v, want %v (all %v)", k, tc.got[k], v, tc.got)
				}
			}
		})
	}
}

func TestPerSession(t *testing.T) {
	before := map[string]float64{"a": 10, "b": 5, "gone": 7}
	after := map[string]float64{"a": 210, "b": 105, "c": 300, "tiny": 20}
	got := fmtSites(perSession(before, after, 100, 0.5), 2, func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) })
	if want := "3 c, 2 a, 1 more"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
