package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The machine the benchmark runs on is small and may be shared, so each
// run reports where the CPU went during its measurement window: the
// broker (-pid), the generator itself and everything else.

// clockTicks is USER_HZ, the unit of /proc CPU times (100 on Linux
// everywhere in practice).
const clockTicks = 100

type cpuSample struct {
	busy, total int64 // whole machine, every CPU (ticks)
	broker      int64 // utime+stime of the broker process
	self        int64 // utime+stime of this process
	ok          bool
}

func sampleCPU(brokerPid int) cpuSample {
	var s cpuSample
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return s
	}
	var v [10]int64
	for i := 1; i < len(f) && i <= len(v); i++ {
		v[i-1], _ = strconv.ParseInt(f[i], 10, 64)
	}
	// user nice system idle iowait irq softirq steal
	idle := v[3] + v[4]
	s.busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
	s.total = s.busy + idle
	s.self = processTicks(os.Getpid())
	if brokerPid > 0 {
		s.broker = processTicks(brokerPid)
	}
	s.ok = true
	return s
}

// processTicks returns a process's user plus system CPU time in ticks, 0 if
// it cannot be read.
func processTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may contain spaces: the
	// fields that follow start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state is field 3, utime field 14 and stime field 15.
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// cpuUse is the CPU spent between two samples, in cores.
type cpuUse struct {
	Broker float64 `json:"broker"`
	Bench  float64 `json:"bench"`
	Other  float64 `json:"other"`
	Idle   float64 `json:"idle"`
}

func cpuBetween(a, b cpuSample, seconds float64) *cpuUse {
	if !a.ok || !b.ok || seconds <= 0 {
		return nil
	}
	cores := func(ticks int64) float64 { return float64(ticks) / clockTicks / seconds }
	busy := cores(b.busy - a.busy)
	u := &cpuUse{
		Broker: cores(b.broker - a.broker),
		Bench:  cores(b.self - a.self),
		Idle:   cores((b.total - b.busy) - (a.total - a.busy)),
	}
	u.Other = max(busy-u.Broker-u.Bench, 0)
	return u
}
