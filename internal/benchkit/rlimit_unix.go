//go:build unix

package benchkit

import (
	"syscall"
	"testing"
)

// RaiseFileLimit makes sure the process may open need file descriptors,
// raising the soft RLIMIT_NOFILE as far as need if it is lower. It skips
// tb when the hard limit is below need or the soft one cannot be raised,
// and fails tb when the limit cannot be read.
func RaiseFileLimit(tb testing.TB, need uint64) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatalf("reading the file limit: %v", err)
	}
	// The conversions are for the systems whose limits are int64 (FreeBSD,
	// DragonFly); elsewhere they are uint64.
	if uint64(lim.Cur) >= need {
		return
	}
	if uint64(lim.Max) < need {
		tb.Skipf("%d file descriptors needed; the hard limit is %d", need, lim.Max)
	}
	setLimit(&lim.Cur, need)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Skipf("raising the file limit to %d: %v", need, err)
	}
}

// setLimit stores v in a field of a syscall.Rlimit, whatever its type.
func setLimit[T int64 | uint64](field *T, v uint64) { *field = T(v) }
