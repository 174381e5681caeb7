//go:build linux || darwin

package main

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// sqliteDMSByte is the byte of a WAL database's shared-memory file (the
// "-shm" file) on which every connection holds a shared lock for as long
// as it is open: SQLite's "dead man switch" (UNIX_SHM_DMS in os_unix.c),
// which tells the last connection to close that it is the last.
const sqliteDMSByte = 128

// sqliteInUse reports whether another process holds the SQLite database at
// path open, by asking the kernel (F_GETLK) whether a process holds a lock
// on the dead man switch of its -shm file. known is true when the answer
// is reliable (the -shm file missing means no process has the WAL
// database open). It must run before this process opens the database:
// closing the descriptor it opens would drop this process's own locks on
// the file.
func sqliteInUse(path string) (inUse, known bool, err error) {
	f, err := os.Open(path + "-shm")
	if errors.Is(err, os.ErrNotExist) {
		return false, true, nil
	}
	if err != nil {
		return false, false, err
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart, Start: sqliteDMSByte, Len: 1}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil {
		return false, false, err
	}
	return lk.Type != syscall.F_UNLCK, true, nil
}
