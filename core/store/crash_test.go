package store

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash tests run this test binary again as a child process (selected by
// crashChildEnv) that writes to a store and dies without closing it.
const (
	crashChildEnv = "STORE_TEST_CRASH_CHILD"
	crashDirEnv   = "STORE_TEST_CRASH_DIR"
)

// TestCrashChild is the child side of the crash tests; it does nothing in a
// normal run.
func TestCrashChild(t *testing.T) {
	mode := os.Getenv(crashChildEnv)
	if mode == "" {
		t.Skip("only runs as a crash test child process")
	}
	s, err := Open(Options{Dir: os.Getenv(crashDirEnv)})
	if err != nil {
		fmt.Println("open error:", err)
		os.Exit(2)
	}
	switch mode {
	case "exit-sync", "exit-nosync-then-sync":
		// Write 50 batches across 3 channels, then exit without Close.
		sync := mode == "exit-sync"
		b := s.NewBatch()
		for i := uint64(1); i <= 50; i++ {
			b.Reset()
			for c := range 3 {
				name := fmt.Sprintf("c%d", c)
				for j := uint64(0); j < 10; j++ {
					seq := (i-1)*10 + j + 1
					b.Append(Record{Channel: name, Seq: seq, Timestamp: tsTimes10(seq), Value: val(name, seq)})
				}
				b.SetMeta(name, Meta{Epoch: 42})
			}
			if err := s.Commit(b, sync); err != nil {
				fmt.Println("commit error:", err)
				os.Exit(2)
			}
		}
		if !sync {
			if err := s.Sync(); err != nil {
				fmt.Println("sync error:", err)
				os.Exit(2)
			}
		}
		fmt.Println("done")
		os.Exit(0)
	case "kill":
		// Commit synced batches forever, reporting each durable seq; the
		// parent kills the process at a random point.
		b := s.NewBatch()
		for seq := uint64(1); ; seq++ {
			b.Reset()
			b.Append(Record{Channel: "k", Seq: seq, Timestamp: tsTimes10(seq), Value: val("k", seq)})
			if err := s.Commit(b, true); err != nil {
				fmt.Println("commit error:", err)
				os.Exit(2)
			}
			fmt.Printf("synced %d\n", seq)
		}
	case "hold":
		// Keep the store open until stdin closes.
		fmt.Println("open")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		os.Exit(0)
	}
	os.Exit(3)
}

func crashChild(t *testing.T, mode, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+mode, crashDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	return cmd
}

func TestCrashWithoutCloseKeepsSyncedWrites(t *testing.T) {
	for _, mode := range []string{"exit-sync", "exit-nosync-then-sync"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			out, err := crashChild(t, mode, dir).Output()
			if err != nil || strings.TrimSpace(string(out)) != "done" {
				t.Fatalf("child: %v, output %q", err, out)
			}
			s := openTest(t, dir)
			for c := range 3 {
				name := fmt.Sprintf("c%d", c)
				checkChannelState(t, s, name, Meta{Epoch: 42}, 1, 500, true)
				if got := scanSeqs(t, s, name, 0, math.MaxUint64, false); !slices.Equal(got, seqRange(1, 500)) {
					t.Fatalf("%s: %d records after crash", name, len(got))
				}
			}
		})
	}
}

func TestCrashKillKeepsSyncedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	for round := range 3 {
		dir := t.TempDir()
		cmd := crashChild(t, "kill", dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill after a varying number of acknowledged commits.
		target := uint64(50 + round*150)
		var acked uint64
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			seq, ok := strings.CutPrefix(sc.Text(), "synced ")
			if !ok {
				t.Fatalf("child said %q", sc.Text())
			}
			if acked, err = strconv.ParseUint(seq, 10, 64); err != nil {
				t.Fatal(err)
			}
			if acked >= target {
				break
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if acked < target {
			t.Fatalf("child stopped after %d commits", acked)
		}

		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatalf("reopen after kill: %v", err)
		}
		_, first, last, _, err := s.Channel("k")
		if err != nil || first != 1 || last < acked {
			t.Fatalf("round %d: after kill first=%d last=%d err=%v; %d were acknowledged", round, first, last, err, acked)
		}
		if got := scanSeqs(t, s, "k", 0, math.MaxUint64, false); !slices.Equal(got, seqRange(1, last)) {
			t.Fatalf("round %d: records not contiguous after kill: %d records, last %d", round, len(got), last)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenLockedByOtherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := crashChild(t, "hold", dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "open\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	start := time.Now()
	_, err = Open(Options{Dir: dir})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Open of a locked dir: %v, want ErrLocked", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("Open blocked on the lock")
	}
	t.Logf("error: %v", err)
}
