// Package reliability is the reliability and security suite of the module:
// tests that try to break the promises the README makes and fail when one
// is broken. It has no code of its own; RELIABILITY.md maps each promise to
// the test that proves it and records the figures of the last run.
//
// Most tests build internal/cmd/tasksd once and run it as a subprocess on
// loopback (they are skipped under -short):
//
//   - TestCrashRecovery kills tasksd with SIGKILL under load and restarts it;
//   - TestReceiverOutage takes callback receivers down, then up again;
//   - TestLoad runs 64 concurrent clients;
//   - TestBadInput sends malformed requests to every route;
//   - TestSSRF aims callbacks at loopback and private addresses;
//   - TestTenants sends randomized two-tenant traffic;
//   - TestSecretsNeverLeak searches every answer and log line for secrets,
//     TestUpstreamQueryNeverLogged the log for the upstream URL's query;
//   - TestStandinFiles guesses the stand-in's file names and asks for many
//     byte ranges;
//   - TestHeaderFlood, TestIdleConnections and TestStalledBodies attack the
//     HTTP server with unfinished headers, idle keep-alive and silent
//     connections, and bodies that stall or trickle, reading the daemon's
//     memory and descriptors from /proc;
//   - TestPostgresFaults runs two replicas on a PostgreSQL server of its own
//     (internal/pgtest.Cluster) and restarts it, stops it for longer than
//     pgstore's retry grace, cuts connections in the middle of Finish and
//     RecordAttempt through a proxy, and starts tasksd before its
//     database.
//
// The long-run tests (longrun_test.go, issue #15) measure what a deployment
// meets after months, as benchmarks would, and fail only on broken
// promises:
//
//   - TestLongRunPrune expires 90% of a SQLite file while 16 clients
//     submit, retrieve and list, and compares 429s and submit p99 with the
//     same load without pruning; then the file's size;
//   - TestLongRunRestart starts tasksd on a file full of unfinished tasks:
//     time to the first answer, the recovery's log lines;
//   - TestLongRunWAL samples the WAL file's size under the same load;
//   - TestLongRunMemory measures the resident memory of a queued task and
//     of a task kept by -db :memory:.
//
// TestStoreFaults runs callback mode and the Tasks API in-process over a
// FaultStore, a taskstore.Store wrapper that fails chosen calls, and
// TestDisk runs the SQLite store on a read-only, deleted and full disk
// (mounting a tmpfs when run as root).
//
// # Profiles
//
// The short profile fits CI: go test -race ./internal/reliability runs in
// well under three minutes on two cores. TASKS_RELIABILITY=long submits more
// tasks, kills tasksd more often, makes outages longer, sends ten times
// the requests and runs the long-run tests at the sizes of issue #15 (a
// million tasks, which takes longer: give it an hour):
//
//	TASKS_RELIABILITY=long go test -race -count=1 -timeout 90m -v ./internal/reliability
package reliability
