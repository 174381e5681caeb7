package pgtest

import (
	"bytes"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Proxy is a loopback TCP proxy in front of a PostgreSQL server that a
// test controls, to make the faults a network or a server can cause at
// chosen moments: the server unreachable (connections refused), every
// connection cut, or one connection cut in the middle of a chosen
// statement, before it reaches the server or after the server ran it and
// before its answer is back.
//
// It speaks no protocol: a statement is recognised by bytes the client
// sends (a task id or a response bound as a parameter, say), so it works
// with prepared statements and plain TLS-less connections (sslmode=disable).
type Proxy struct {
	tb     testing.TB
	target string

	mu    sync.Mutex
	ln    net.Listener
	addr  string
	conns map[*proxyConn]struct{}
	cuts  []*Cut
	done  chan struct{}
	wg    sync.WaitGroup
}

// Cut is a one-shot fault armed with Proxy.Cut: the first connection whose
// client sends Match (within one read, or across two) is cut there.
type Cut struct {
	// Match is what the client sends in the statement to cut.
	Match []byte
	// AfterSend: false cuts the connection without passing on the
	// client's bytes, so the statement never reaches the server; true
	// passes them on and cuts the connection once the server has answered
	// them completely (ReadyForQuery), without passing the answer on, so
	// the statement ran (and committed, outside a transaction) and its
	// answer is lost.
	AfterSend bool
	// Done, when not nil, is closed once the cut is made.
	Done chan struct{}
}

// NewProxy starts a proxy to target (host:port) on a fresh loopback port;
// it is closed when the test ends.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{tb: tb, target: target, ln: ln, addr: ln.Addr().String(),
		conns: map[*proxyConn]struct{}{}, done: make(chan struct{})}
	p.wg.Add(1)
	go p.accept(ln)
	tb.Cleanup(p.Close)
	return p
}

// Addr returns the proxy's address, 127.0.0.1:port.
func (p *Proxy) Addr() string { return p.addr }

// URL returns dbURL (a postgres:// URL) with its host and port replaced by
// the proxy's.
func (p *Proxy) URL(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		p.tb.Fatalf("pgtest: proxy: %v", err)
	}
	u.Host = p.addr
	return u.String()
}

// Down makes the server unreachable: the proxy stops listening (new
// connections are refused) and cuts every open connection. Up listens
// again on the same address.
func (p *Proxy) Down() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	p.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	p.CutAll()
}

// Up ends Down: the proxy listens again on its address.
func (p *Proxy) Up() {
	p.tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		return
	}
	var ln net.Listener
	var err error
	for range 50 { // the address may linger for a moment after Close
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		p.tb.Fatalf("pgtest: proxy: listening again on %s: %v", p.addr, err)
	}
	p.ln = ln
	p.wg.Add(1)
	go p.accept(ln)
}

// CutAll closes every open connection, as a network failure would.
func (p *Proxy) CutAll() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// Cut arms a one-shot cut (see Cut).
func (p *Proxy) Cut(c *Cut) {
	p.mu.Lock()
	p.cuts = append(p.cuts, c)
	p.mu.Unlock()
}

// Close stops the proxy and cuts its connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	select {
	case <-p.done:
		p.mu.Unlock()
		return
	default:
	}
	close(p.done)
	ln := p.ln
	p.ln = nil
	p.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	p.CutAll()
	p.wg.Wait()
}

func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			client.Close()
			continue
		}
		c := &proxyConn{p: p, client: client, server: server}
		p.mu.Lock()
		select {
		case <-p.done:
			p.mu.Unlock()
			c.close()
			return
		default:
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go c.up()
		go c.down()
	}
}

// proxyConn is one proxied connection.
type proxyConn struct {
	p              *Proxy
	client, server net.Conn
	once           sync.Once

	mu    sync.Mutex
	armed *Cut // a cut after send: waiting for the server's answer
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		c.client.Close()
		c.server.Close()
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.mu.Unlock()
	})
}

// take returns the armed cut whose Match is in window and ends after its
// first fresh bytes (those after the first old ones), removing it.
func (p *Proxy) take(window []byte, old int) *Cut {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, cut := range p.cuts {
		if j := bytes.LastIndex(window, cut.Match); j >= 0 && j+len(cut.Match) > old {
			p.cuts = append(p.cuts[:i], p.cuts[i+1:]...)
			return cut
		}
	}
	return nil
}

// up copies the client's bytes to the server, making the cuts they match.
func (c *proxyConn) up() {
	defer c.p.wg.Done()
	defer c.close()
	buf := make([]byte, 64<<10)
	var prev []byte // the end of the previous read, for matches across reads
	for {
		n, err := c.client.Read(buf)
		if n > 0 {
			window := append(prev, buf[:n]...)
			if cut := c.p.take(window, len(prev)); cut != nil {
				if !cut.AfterSend {
					c.close()
					cutDone(cut)
					return
				}
				c.mu.Lock()
				c.armed = cut
				c.mu.Unlock()
			}
			if _, werr := c.server.Write(buf[:n]); werr != nil {
				return
			}
			prev = append(prev[:0], window[max(0, len(window)-1024):]...)
		}
		if err != nil {
			return
		}
	}
}

// readyForQuery is the end of PostgreSQL's answer to a statement: the
// ReadyForQuery message, 'Z', length 5, and the transaction status.
var readyForQuery = []byte{'Z', 0, 0, 0, 5}

// down copies the server's bytes to the client, or, once a cut after send
// is armed, swallows them up to the end of the answer and cuts.
func (c *proxyConn) down() {
	defer c.p.wg.Done()
	defer c.close()
	buf := make([]byte, 64<<10)
	var swallowed []byte
	for {
		n, err := c.server.Read(buf)
		if n > 0 {
			c.mu.Lock()
			cut := c.armed
			c.mu.Unlock()
			if cut != nil {
				swallowed = append(swallowed, buf[:n]...)
				if i := bytes.LastIndex(swallowed, readyForQuery); i >= 0 && i+6 == len(swallowed) {
					c.close()
					cutDone(cut)
					return
				}
				continue
			}
			if _, werr := c.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func cutDone(c *Cut) {
	if c.Done != nil {
		close(c.Done)
	}
}
