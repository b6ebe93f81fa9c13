// Command profserve runs the Switchboard server exactly like
// `switchboard serve` (same flags, environment and config file) and also
// serves the Go profiling endpoints (net/http/pprof) on a separate address,
// so that a load run of mqtt-bench can be profiled:
//
//	go run ./cmd/mqtt-bench/profserve --pprof 127.0.0.1:6060 \
//	    --dev --data /tmp/sb --http 127.0.0.1:8080 --mqtt 127.0.0.1:1883 --stomp off --amqp off
//	go tool pprof -top 'http://127.0.0.1:6060/debug/pprof/profile?seconds=10'
//
// The profiling listener is meant for a benchmark machine only: it is not
// authenticated.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/switchboardhq/switchboard/internal/config"
	"github.com/switchboardhq/switchboard/internal/server"
)

func main() {
	if err := serve(); err != nil {
		fmt.Fprintln(os.Stderr, "profserve:", err)
		os.Exit(1)
	}
}

func serve() error {
	fs := pflag.NewFlagSet("profserve", pflag.ContinueOnError)
	pprofAddr := fs.String("pprof", "127.0.0.1:6060", "address of the profiling endpoints (/debug/pprof)")
	mutexRate := fs.Int("mutex-profile-fraction", 0, "runtime.SetMutexProfileFraction (0: off)")
	blockRate := fs.Int("block-profile-rate", 0, "runtime.SetBlockProfileRate in nanoseconds (0: off)")
	config.RegisterFlags(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	cfg, err := config.Load(fs, nil)
	if err != nil {
		return err
	}
	runtime.SetMutexProfileFraction(*mutexRate)
	runtime.SetBlockProfileRate(*blockRate)

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.Log.SlogLevel()}))
	srv, err := server.New(cfg, log)
	if err != nil {
		return err
	}
	go func() {
		// http.DefaultServeMux carries only the pprof handlers here.
		if err := http.ListenAndServe(*pprofAddr, nil); err != nil {
			log.Error("pprof listener", "err", err)
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := srv.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
