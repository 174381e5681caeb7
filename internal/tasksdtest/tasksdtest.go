// Package tasksdtest runs the tasksd binary as a subprocess for black-box
// tests, and receives its callbacks.
//
// Binary builds internal/cmd/tasksd once per test process (skipping the test
// under -short), or takes the executable that TASKSDTEST_BINARY names, to
// run today's tests against another build (for example the one before a
// fix, to measure what it changed). Start runs it on a fresh loopback port
// and waits for the "msg=listening addr=…" log line; the Daemon it returns
// gives the base URL, the process id and the process's output, and ends the
// process with Stop (SIGTERM, which must exit cleanly) or Kill (SIGKILL). A
// process still running when the test ends is killed, and when the test
// failed the tail of its output is logged. StartWithFileLimit runs it with a
// lower open-file limit, as `ulimit -n` would, and Daemon.Memory reads its
// resident memory from /proc.
//
// Receiver is a loopback callback receiver that checks what the contract
// promises of every callback: the webhook-id and webhook-timestamp headers,
// a body whose task_id is the webhook-id, the same body on every redelivery
// and, given the secret, a valid Standard Webhooks signature.
//
// A test package that uses Binary may call Main from its TestMain so that
// the binary is removed when the tests end.
package tasksdtest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/logtest"
)

// How long Start waits for the listening line, Stop for a clean exit after
// SIGTERM and Kill for the process to die.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 60 * time.Second
	killTimeout  = 30 * time.Second
)

var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// BinaryEnv names an environment variable that, when set, holds the path of
// a tasksd executable for Binary to return instead of building one.
const BinaryEnv = "TASKSDTEST_BINARY"

// Binary builds internal/cmd/tasksd once per test process and returns the
// path of the executable. Under -short it skips the test instead. The
// binary is built plain (a -race test binary does not make it -race), as an
// operator would run it. When $TASKSDTEST_BINARY is set, Binary returns it
// and builds nothing.
func Binary(tb testing.TB) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("runs the tasksd binary as a subprocess; skipped in -short")
	}
	if p := os.Getenv(BinaryEnv); p != "" {
		return p
	}
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "tasksdtest")
		if build.err != nil {
			return
		}
		build.path = filepath.Join(build.dir, "tasksd")
		cmd := exec.Command("go", "build", "-o", build.path, "github.com/tasksapi/tasks/internal/cmd/tasksd")
		// Run go from this package's source directory, inside the module,
		// whatever the test's working directory (unless built -trimpath).
		if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
			cmd.Dir = filepath.Dir(file)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("tasksdtest: go build tasksd: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		tb.Fatal(build.err)
	}
	return build.path
}

// Main runs the tests with m.Run, removes the binary Binary built and exits
// with the tests' exit code. Call it from TestMain:
//
//	func TestMain(m *testing.M) { tasksdtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// Daemon is one running tasksd process.
type Daemon struct {
	tb     testing.TB
	cmd    *exec.Cmd
	url    string
	stdout Buffer
	logs   Buffer // standard error
	all    Buffer // both, interleaved, for failure reports
	exited chan struct{}
	err    error // the exit error, once exited is closed
}

var listenRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

// Start runs the tasksd binary with args and with env added to the test
// process's environment, and waits until it logs the address it listens on.
// Unless args set -addr, it listens on 127.0.0.1:0. It fails the test if the
// process exits first or does not log its address in 30 s.
func Start(tb testing.TB, env []string, args ...string) *Daemon {
	tb.Helper()
	return start(tb, 0, env, args)
}

// StartWithFileLimit is Start with the process's open-file limit
// (RLIMIT_NOFILE, soft and hard) set to nofile, as `ulimit -n nofile` in a
// shell would: tasksd is run through /bin/sh, which sets the limit and then
// execs it, so Daemon.PID is tasksd's own process id.
func StartWithFileLimit(tb testing.TB, nofile int, env []string, args ...string) *Daemon {
	tb.Helper()
	if nofile <= 0 {
		tb.Fatalf("tasksdtest: open-file limit %d", nofile)
	}
	return start(tb, nofile, env, args)
}

func start(tb testing.TB, nofile int, env []string, args []string) *Daemon {
	tb.Helper()
	if !hasAddr(args) {
		args = append([]string{"-addr", "127.0.0.1:0"}, args...)
	}
	bin := Binary(tb)
	cmd := exec.Command(bin, args...)
	if nofile > 0 {
		sh := append([]string{"-c", `ulimit -n "$1" && shift && exec "$@"`, "tasksd", strconv.Itoa(nofile), bin}, args...)
		cmd = exec.Command("/bin/sh", sh...)
	}
	cmd.Env = append(os.Environ(), env...)
	d := &Daemon{tb: tb, cmd: cmd, exited: make(chan struct{})}
	cmd.Stdout = io.MultiWriter(&d.stdout, &d.all)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		tb.Fatalf("tasksdtest: start tasksd: %v", err)
	}
	addr := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text() + "\n"
			d.logs.Write([]byte(line))
			d.all.Write([]byte(line))
			if m := listenRE.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr) // a line too long for the scanner
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		<-scanned // every line is in the buffers once exited is closed
		d.err = err
		close(d.exited)
	}()
	tb.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			cmd.Process.Kill()
			<-d.exited
		}
		if tb.Failed() {
			tb.Logf("tasksd output (last 8 KiB):\n%s", d.tail())
		}
	})
	select {
	case a := <-addr:
		d.url = "http://" + a
	case <-d.exited:
		tb.Fatalf("tasksd exited early: %v\n%s", d.err, d.tail())
	case <-time.After(startTimeout):
		tb.Fatalf("tasksd did not start in %v:\n%s", startTimeout, d.tail())
	}
	return d
}

// hasAddr reports whether args set the -addr flag.
func hasAddr(args []string) bool {
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "addr" {
			return true
		}
	}
	return false
}

// URL returns the base URL of the daemon, as http://127.0.0.1:port.
func (d *Daemon) URL() string { return d.url }

// PID returns the process id of the daemon.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Memory is the resident memory of a process, in bytes.
type Memory struct {
	RSS  int64 // VmRSS: resident now
	Peak int64 // VmHWM: the highest RSS since the process started
}

// Memory reads the daemon's resident memory from /proc/<pid>/status. It
// fails where there is no /proc (the test may skip then).
func (d *Daemon) Memory() (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.PID()))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	var found int
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != "VmRSS" && name != "VmHWM" {
			continue
		}
		f := strings.Fields(rest) // "123456 kB"
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, fmt.Errorf("tasksdtest: unexpected %s line %q", name, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("tasksdtest: unexpected %s line %q", name, line)
		}
		if name == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.Peak = kb << 10
		}
		found++
	}
	if found != 2 {
		return Memory{}, fmt.Errorf("tasksdtest: no VmRSS and VmHWM in /proc/%d/status", d.PID())
	}
	return m, nil
}

// Logs returns what the daemon wrote to standard error so far: its log.
func (d *Daemon) Logs() string { return d.logs.String() }

// Stdout returns what the daemon wrote to standard output so far.
func (d *Daemon) Stdout() string { return d.stdout.String() }

// Stop sends SIGTERM and waits for the process to exit. It fails the test
// if the exit status is not zero or the process still runs after 60 s.
func (d *Daemon) Stop() {
	d.tb.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		if d.err != nil {
			d.tb.Fatalf("tasksd exit after SIGTERM: %v\n%s", d.err, d.tail())
		}
	case <-time.After(stopTimeout):
		d.tb.Fatalf("tasksd did not stop on SIGTERM in %v", stopTimeout)
	}
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (d *Daemon) Kill() {
	d.tb.Helper()
	if err := d.cmd.Process.Kill(); err != nil {
		d.tb.Fatalf("tasksdtest: kill: %v", err)
	}
	select {
	case <-d.exited:
	case <-time.After(killTimeout):
		d.tb.Fatalf("tasksd did not die on SIGKILL in %v", killTimeout)
	}
}

// tail returns the last 8 KiB of the interleaved output.
func (d *Daemon) tail() string {
	s := d.all.String()
	if n := 8 << 10; len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Buffer is a bytes.Buffer that is safe for concurrent writers and readers.
// The zero value is empty and ready to use.
type Buffer = logtest.Buffer
