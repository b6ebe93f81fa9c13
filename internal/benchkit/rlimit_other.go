//go:build !unix

package benchkit

import "testing"

// RaiseFileLimit does nothing on this platform: there is no RLIMIT_NOFILE
// to raise. Opening too many connections fails the benchmark instead.
func RaiseFileLimit(tb testing.TB, need uint64) { tb.Helper() }
