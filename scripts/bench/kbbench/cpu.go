package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// CPU per call is the benchmark's steadier figure. On a shared 2-core
// machine calls/s moves with whatever else runs (the plain proxy alone
// ranged 9k–18k/s in one session), but the CPU a proxy spends on one call
// moves far less, and every process here competes for the same two cores:
// what a call costs in CPU is what bounds its throughput.
//
// It is read from /proc/<pid>/stat (utime + stime, in clock ticks) of the
// processes serving the calls, before and after the measured run. For the
// PostgreSQL setups the database's own processes (every process named
// postgres: the benchmark's server is assumed to serve nothing else) are
// counted too, since the work a call makes there is part of its cost.

// clockTick is the kernel's USER_HZ: 100 on every Linux this runs on.
const clockTick = 10 * time.Millisecond

// procCPU is the CPU a process has used, user and system; 0 if it cannot be
// read (not Linux, or the process is gone).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// the fields after the last ')' start at field 3 (state).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(string(f[11]), 10, 64) // field 14
	stime, _ := strconv.ParseInt(string(f[12]), 10, 64) // field 15
	return time.Duration(utime+stime) * clockTick
}

// pidsNamed lists the processes whose command name is name.
func pidsNamed(name string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && string(bytes.TrimSpace(comm)) == name {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cpuMeter sums the CPU of a set of processes between two readings.
type cpuMeter struct {
	pids   []int
	byName string // also every process of this name, found at each reading
}

func (m cpuMeter) read() time.Duration {
	var sum time.Duration
	for _, pid := range m.pids {
		sum += procCPU(pid)
	}
	if m.byName != "" {
		for _, pid := range pidsNamed(m.byName) {
			sum += procCPU(pid)
		}
	}
	return sum
}
