package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// rssBytes returns the resident set of a process, from /proc/<pid>/status.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// settledRSS waits for a process to settle, then returns the median of a few
// samples of its resident set.
func settledRSS(pid int, settle time.Duration) (int64, error) {
	time.Sleep(settle)
	var samples []float64
	for range 5 {
		r, err := rssBytes(pid)
		if err != nil {
			return 0, err
		}
		samples = append(samples, float64(r))
		time.Sleep(200 * time.Millisecond)
	}
	return int64(median(samples)), nil
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuSeconds returns the user and system CPU time a process has used.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// after its closing parenthesis, where field 3 (state) comes first.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	return float64(utime+stime) / clockTicks, nil
}

// findProcess returns the pid of a running program named name whose command
// line contains marker, such as the kube-apiserver of a control plane whose
// folder is marker.
func findProcess(name, marker string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) == name && strings.Contains(string(b), marker) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s process with %q in its command line", name, marker)
}

// machineBusy returns the share of the machine's CPU time that was busy over
// window, from /proc/stat.
func machineBusy(window time.Duration) (float64, error) {
	read := func() (busy, total float64, err error) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0, err
		}
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		if len(f) < 5 || f[0] != "cpu" {
			return 0, 0, fmt.Errorf("unexpected /proc/stat")
		}
		for i, v := range f[1:] {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, 0, err
			}
			total += x
			if i != 3 && i != 4 { // idle and iowait
				busy += x
			}
		}
		return busy, total, nil
	}
	b0, t0, err := read()
	if err != nil {
		return 0, err
	}
	time.Sleep(window)
	b1, t1, err := read()
	if err != nil {
		return 0, err
	}
	if t1 == t0 {
		return 0, nil
	}
	return (b1 - b0) / (t1 - t0), nil
}

// quiesce waits, up to limit, until the machine is nearly idle, so that a
// figure does not share the cores with work left over from the one before
// (a control plane digesting thousands of new objects, processes ending).
// It returns how busy the machine was over its last half second.
func quiesce(limit time.Duration) float64 {
	start := time.Now()
	var busy float64
	for time.Since(start) < limit {
		var err error
		if busy, err = machineBusy(500 * time.Millisecond); err != nil || busy < 0.15 {
			return busy
		}
	}
	step("  the machine is still %.0f%% busy after %s; measuring anyway", busy*100, limit)
	return busy
}
