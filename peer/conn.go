package peer

import (
	"bufio"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/rpc"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds of reaching a peer. A peer that cannot be dialled is routed
// around for downFor: its keys are decided locally meanwhile, which the
// store's row lock keeps exact.
const (
	dialTimeout = time.Second
	downFor     = 2 * time.Second
)

// errNotSent marks a failure that happened before the op left this
// replica: the owner cannot have applied it, so it may be applied here.
var errNotSent = errors.New("not sent")

// remote is one peer: a single multiplexed net/rpc connection, dialled on
// first use and again after it breaks.
type remote struct {
	id, url, token string

	mu        sync.Mutex
	client    *rpc.Client
	codec     *clientCodec // client's
	downUntil time.Time
}

// conn returns a live client, dialling if there is none. A peer that was
// unreachable within downFor is not dialled again.
func (p *remote) conn() (*rpc.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil && !p.codec.dead.Load() {
		return p.client, nil
	}
	if p.client != nil {
		// The connection failed (the peer died, or closed it) before
		// this op was handed to it: nothing of this op was written, so a
		// new connection, or this replica, may take it.
		p.client.Close() //nolint:errcheck // already broken
		p.client = nil
	}
	if time.Now().Before(p.downUntil) {
		return nil, fmt.Errorf("peer %s: %w: unreachable less than %s ago", p.url, errNotSent, downFor)
	}
	codec, err := dial(p.url, p.token)
	if err != nil {
		p.downUntil = time.Now().Add(downFor)
		return nil, fmt.Errorf("peer %s: %w: %w", p.url, errNotSent, err)
	}
	p.client, p.codec = rpc.NewClientWithCodec(codec), codec
	return p.client, nil
}

// drop forgets a client that failed, so the next op dials again.
func (p *remote) drop(c *rpc.Client) {
	p.mu.Lock()
	if p.client == c {
		p.client = nil
	}
	p.mu.Unlock()
	c.Close() //nolint:errcheck // already broken
}

func (p *remote) close() {
	p.mu.Lock()
	c := p.client
	p.client = nil
	p.mu.Unlock()
	if c != nil {
		c.Close() //nolint:errcheck // shutting down
	}
}

// call runs one op on the peer, waiting until wait for the answer. Only a
// failure before the op is handed to a connection is errNotSent (no
// connection could be made, or the one there had already failed): once
// handed over, its fate is unknown unless the peer answers.
func (p *remote) call(method string, args, reply any, wait time.Duration) error {
	c, err := p.conn()
	if err != nil {
		return err
	}
	call := c.Go(method, args, reply, make(chan *rpc.Call, 1))
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-call.Done:
	case <-t.C:
		// A peer that holds an op this long is not deciding: route its
		// keys here for a while rather than queue more behind it.
		p.mu.Lock()
		p.downUntil = time.Now().Add(downFor)
		p.mu.Unlock()
		p.drop(c)
		return fmt.Errorf("peer %s: no answer within %s", p.url, wait)
	}
	if call.Error != nil {
		p.drop(c)
		return fmt.Errorf("peer %s: %w", p.url, call.Error)
	}
	return nil
}

// dial opens a peer connection: TCP, the authenticated CONNECT, then
// net/rpc's gob codec on the same connection.
func dial(rawURL, token string) (*clientCodec, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("peer url %q: want http://HOST:PORT", rawURL)
	}
	conn, err := net.DialTimeout("tcp", u.Host, dialTimeout)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(dialTimeout)) //nolint:errcheck // bounds the handshake only
	if _, err := io.WriteString(conn, "CONNECT "+rpcPath+" HTTP/1.0\r\nHost: "+u.Host+"\r\nAuthorization: Bearer "+token+"\r\n\r\n"); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		conn.Close()
		return nil, err
	}
	resp.Body.Close()
	if resp.Status != connectedOK {
		conn.Close()
		return nil, fmt.Errorf("peer refused the connection: %s", resp.Status)
	}
	conn.SetDeadline(time.Time{}) //nolint:errcheck // see above
	w := bufio.NewWriter(conn)
	return &clientCodec{c: conn, dec: gob.NewDecoder(br), enc: gob.NewEncoder(w), w: w}, nil
}

// clientCodec is net/rpc's gob client codec (net/rpc keeps its own
// unexported), plus dead: set once a read failed, which is how net/rpc
// learns that the connection is gone. A connection found dead before an op
// is handed to it is known not to have carried that op.
type clientCodec struct {
	c    io.ReadWriteCloser
	dec  *gob.Decoder
	enc  *gob.Encoder
	w    *bufio.Writer
	dead atomic.Bool
}

func (c *clientCodec) WriteRequest(r *rpc.Request, body any) error {
	if err := c.enc.Encode(r); err != nil {
		return err
	}
	if err := c.enc.Encode(body); err != nil {
		return err
	}
	return c.w.Flush()
}

func (c *clientCodec) ReadResponseHeader(r *rpc.Response) error { return c.read(r) }
func (c *clientCodec) ReadResponseBody(body any) error          { return c.read(body) }

func (c *clientCodec) read(v any) error {
	err := c.dec.Decode(v)
	if err != nil {
		c.dead.Store(true)
	}
	return err
}

func (c *clientCodec) Close() error {
	c.dead.Store(true)
	return c.c.Close()
}

// bufferedConn reads through a bufio.Reader that may already hold the
// connection's first bytes.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
