package main

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// connLimit is a net.Listener that keeps at most max client connections
// open. At the cap, Accept closes the connection that has been idle (a
// keep-alive connection between requests) the longest to make room for the
// one that arrived; when none is idle, the new connection waits, accepted
// but not served, until one closes, and later clients wait in the kernel's
// listen backlog. Connections that are not idle end by the server's
// timeouts (headers, bodies, idle), so the wait is bounded by them.
//
// It is ours rather than golang.org/x/net/netutil.LimitListener because
// that one only blocks: idle keep-alive connections held open by a client
// that sends nothing would keep everyone else out until IdleTimeout.
//
// The server must report connection states to it: set http.Server.ConnState
// to its track method.
type connLimit struct {
	net.Listener
	max    int
	onFull func() // called, at most once a minute, when the cap is reached

	mu       sync.Mutex
	open     int
	idle     map[*limitedConn]time.Time // idle connections, and since when
	lastFull time.Time
	wake     chan struct{} // a slot freed or a connection went idle
	done     chan struct{}
	close    sync.Once
}

func newConnLimit(ln net.Listener, max int, onFull func()) *connLimit {
	return &connLimit{
		Listener: ln,
		max:      max,
		onFull:   onFull,
		idle:     make(map[*limitedConn]time.Time),
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

// Accept waits for a connection and for room for it.
func (l *connLimit) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	for {
		l.mu.Lock()
		if l.open < l.max {
			l.open++
			l.mu.Unlock()
			return &limitedConn{Conn: c, l: l}, nil
		}
		var victim *limitedConn
		var since time.Time
		for ic, t := range l.idle {
			if victim == nil || t.Before(since) {
				victim, since = ic, t
			}
		}
		if victim != nil {
			delete(l.idle, victim)
		}
		full := l.onFull != nil && time.Since(l.lastFull) >= time.Minute
		if full {
			l.lastFull = time.Now()
		}
		l.mu.Unlock()
		if full {
			l.onFull()
		}
		if victim != nil {
			victim.Close() // frees its slot
			continue
		}
		select {
		case <-l.wake:
		case <-l.done:
			c.Close()
			return nil, net.ErrClosed
		}
	}
}

// Close stops Accept; open connections stay open.
func (l *connLimit) Close() error {
	l.close.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// track is the http.Server.ConnState hook: it keeps the set of idle
// connections.
func (l *connLimit) track(c net.Conn, state http.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	if state == http.StateIdle && !lc.released {
		l.idle[lc] = time.Now()
		l.signal()
	} else {
		delete(l.idle, lc)
	}
	l.mu.Unlock()
}

// signal wakes a waiting Accept; l.mu is held or not, either way.
func (l *connLimit) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// openConns returns how many connections are open and how many of them are
// idle.
func (l *connLimit) openConns() (open, idle int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, len(l.idle)
}

// limitedConn is a connection counted by a connLimit; closing it frees its
// slot, once.
type limitedConn struct {
	net.Conn
	l        *connLimit
	released bool // guarded by l.mu
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	l := c.l
	l.mu.Lock()
	if !c.released {
		c.released = true
		l.open--
		delete(l.idle, c)
		l.signal()
	}
	l.mu.Unlock()
	return err
}
