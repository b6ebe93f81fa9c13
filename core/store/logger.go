package store

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// pebbleLogger adapts a *slog.Logger to Pebble's Logger interface, so that
// Pebble's messages (background errors, corruption reports) go through the
// application's structured logging instead of the standard log package.
type pebbleLogger struct {
	log *slog.Logger
	// exit is called after a fatal message. Pebble requires Fatalf not to
	// return: it is used when the engine's state can no longer be trusted
	// (a failed commit pipeline or MANIFEST write, detected corruption).
	exit func(code int)
}

var _ pebble.Logger = (*pebbleLogger)(nil)

func newPebbleLogger(l *slog.Logger) *pebbleLogger {
	return &pebbleLogger{log: l.With(slog.String("component", "pebble")), exit: os.Exit}
}

// Infof implements pebble.Logger.
func (l *pebbleLogger) Infof(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelInfo) {
		l.log.Info(message(format, args))
	}
}

// Errorf implements pebble.Logger.
func (l *pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(message(format, args))
}

// Fatalf implements pebble.Logger. It logs at error level and terminates the
// process, as Pebble expects.
func (l *pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(message(format, args), slog.Bool("fatal", true))
	l.exit(1)
}

func message(format string, args []any) string {
	return strings.TrimRight(fmt.Sprintf(format, args...), "\n")
}
