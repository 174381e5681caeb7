package pgtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Cluster is a throwaway PostgreSQL server of a test's own: initdb'd into
// a temporary directory and listening on a loopback port of its own, so
// that the test can stop, start and restart it without disturbing the
// server in TASKS_PG_URL that other tests share. Like .ci/start-postgres.sh
// it trusts local connections and trades durability for speed (fsync off).
type Cluster struct {
	tb    testing.TB
	bin   string // the directory of initdb, pg_ctl and postgres
	dir   string // holds data/, the socket and server.log
	port  int
	owner *user.User // nil: the test's own user runs the server
	extra []string   // postgresql.conf lines

	mu      sync.Mutex
	running bool
}

// ClusterOption configures NewCluster.
type ClusterOption func(*Cluster)

// WithSetting adds a postgresql.conf line such as
// "shared_preload_libraries = 'pg_stat_statements'".
func WithSetting(line string) ClusterOption {
	return func(c *Cluster) { c.extra = append(c.extra, line) }
}

// ServerBin returns the directory holding PostgreSQL's server programs
// (initdb, pg_ctl, postgres): the newest /usr/lib/postgresql/*/bin (Debian's
// layout), else the directory of pg_ctl on the PATH; "" when there is none.
func ServerBin() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) < version(dirs[j]) })
	for i := len(dirs) - 1; i >= 0; i-- {
		if isExec(filepath.Join(dirs[i], "pg_ctl")) && isExec(filepath.Join(dirs[i], "initdb")) {
			return dirs[i]
		}
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil && isExec(filepath.Join(filepath.Dir(p), "initdb")) {
		return filepath.Dir(p)
	}
	return ""
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// NewCluster creates and starts a cluster with one database, "tasks". When
// no server binaries are installed it skips the test, saying so (and fails
// it when the CI environment variable is set, as URL does). The server
// refuses to run as root: as root, its files belong to, and it runs as,
// the postgres user. The cluster is stopped and removed when the test
// ends.
func NewCluster(tb testing.TB, opts ...ClusterOption) *Cluster {
	tb.Helper()
	bin := ServerBin()
	if bin == "" {
		msg := "no PostgreSQL server programs (initdb, pg_ctl) found; install Debian's postgresql package (.ci/start-postgres.sh does)"
		if os.Getenv("CI") != "" {
			tb.Fatal(msg + " (CI is set: the PostgreSQL tests must run)")
		}
		tb.Skip(msg)
	}
	c := &Cluster{tb: tb, bin: bin}
	for _, o := range opts {
		o(c)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Skipf("running as root and there is no postgres user to run the server as: %v", err)
		}
		c.owner = u
	}
	dir, err := os.MkdirTemp("", "pgtest-cluster-")
	if err != nil {
		tb.Fatal(err)
	}
	c.dir = dir
	tb.Cleanup(func() {
		c.stop("immediate")
		os.RemoveAll(dir)
	})
	if c.owner != nil {
		uid, _ := strconv.Atoi(c.owner.Uid)
		gid, _ := strconv.Atoi(c.owner.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			tb.Fatal(err)
		}
	}
	if out, err := c.run("initdb", "-D", c.data(), "-U", "postgres", "-A", "trust", "-E", "UTF8",
		"--locale=C.UTF-8", "--no-sync"); err != nil {
		tb.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	conf := []string{
		"", "# pgtest.Cluster: loopback only, speed over durability",
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = '" + dir + "'",
		"max_connections = 200", "shared_buffers = 64MB",
		"fsync = off", "synchronous_commit = off", "full_page_writes = off",
		"log_min_messages = warning", "log_min_error_statement = panic",
	}
	conf = append(conf, c.extra...)
	f, err := os.OpenFile(filepath.Join(c.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(strings.Join(conf, "\n") + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		tb.Fatal(err)
	}
	c.port = freePort(tb)
	c.Start()
	Exec(tb, c.URL("postgres"), "CREATE DATABASE tasks")
	return c
}

// freePort returns a loopback TCP port that nothing listens on now.
func freePort(tb testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

// run runs one of the server programs, as the postgres user when the test
// runs as root.
func (c *Cluster) run(prog string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, prog)
	cmd := exec.Command(path, args...)
	if c.owner != nil {
		cmd = exec.Command("runuser", append([]string{"-u", c.owner.Username, "--", path}, args...)...)
	}
	cmd.Dir = c.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// Port returns the server's TCP port on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// Addr returns the server's address, 127.0.0.1:port.
func (c *Cluster) Addr() string { return "127.0.0.1:" + strconv.Itoa(c.port) }

// URL returns the URL of database db (normally "tasks") on the cluster.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() {
	c.tb.Helper()
	if err := c.Boot(); err != nil {
		c.tb.Fatal(err)
	}
}

// Boot is Start returning its failure instead of failing the test, for
// goroutines other than the test's own.
func (c *Cluster) Boot() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return nil
	}
	if out, err := c.run("pg_ctl", "-D", c.data(), "-l", filepath.Join(c.dir, "server.log"), "-w", "-t", "60",
		"-o", "-p "+strconv.Itoa(c.port), "start"); err != nil {
		return fmt.Errorf("pgtest: pg_ctl start: %v\n%s\n%s", err, out, c.Log())
	}
	c.running = true
	return nil
}

// Stop stops the server as `pg_ctl stop -m fast` does: sessions are ended
// (57P01) and their transactions rolled back.
func (c *Cluster) Stop() {
	c.tb.Helper()
	if out, err := c.stop("fast"); err != nil {
		c.tb.Fatalf("pgtest: pg_ctl stop: %v\n%s", err, out)
	}
}

func (c *Cluster) stop(mode string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return nil, nil
	}
	out, err := c.run("pg_ctl", "-D", c.data(), "-m", mode, "-w", "-t", "60", "stop")
	if err == nil {
		c.running = false
	}
	return out, err
}

// Restart runs `pg_ctl restart -m fast` and returns how long the server
// took to stop and accept connections again.
func (c *Cluster) Restart() time.Duration {
	c.tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	began := time.Now()
	if out, err := c.run("pg_ctl", "-D", c.data(), "-l", filepath.Join(c.dir, "server.log"), "-m", "fast", "-w", "-t", "60",
		"-o", "-p "+strconv.Itoa(c.port), "restart"); err != nil {
		c.tb.Fatalf("pgtest: pg_ctl restart: %v\n%s\n%s", err, out, c.Log())
	}
	c.running = true
	return time.Since(began)
}

// Log returns the server's log so far.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
	return string(b)
}
