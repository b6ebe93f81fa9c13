package server

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind (a server
// that did not shut down completely).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
