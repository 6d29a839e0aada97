package peer

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/rpc"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keybrake/keybrake"
)

// Store is the local ledger a key's owner decides with: the store itself,
// never a router, so an op is forwarded at most once whatever two replicas
// believe about ownership.
type Store interface {
	Decide(ctx context.Context, a keybrake.Attempt) (keybrake.Decision, error)
	Settle(ctx context.Context, st keybrake.Settlement) (keybrake.Usage, error)
}

// maxTimeout bounds the deadline a peer may ask for: no op holds a
// goroutine of the owner longer than any decision could take.
const maxTimeout = time.Minute

// Handler serves the peer listener: the other replicas' ledger ops for
// the keys this one owns. It answers only an HTTP CONNECT to rpcPath
// carrying the peer token (compared in constant time); the connection
// then speaks net/rpc until either side closes it.
type Handler struct {
	store    Store
	token    [32]byte // SHA-256 of the peer token
	log      *slog.Logger
	rpc      *rpc.Server
	received atomic.Int64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// NewHandler serves ops for the owner's store; token authenticates peers.
func NewHandler(store Store, token string, log *slog.Logger) *Handler {
	h := &Handler{store: store, token: sha256.Sum256([]byte(token)), log: log, rpc: rpc.NewServer(), conns: map[net.Conn]struct{}{}}
	if err := h.rpc.RegisterName("Ledger", &service{h: h}); err != nil {
		panic(err) // the service's method set is fixed: a programming error
	}
	return h
}

// Received counts the ops this replica decided or settled for others.
func (h *Handler) Received() int64 { return h.received.Load() }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.RequestURI != rpcPath:
		refuse(w, http.StatusNotFound, keybrake.CodeNotFound, "the peer listener serves only "+rpcPath)
		return
	case r.Method != http.MethodConnect:
		w.Header().Set("Allow", http.MethodConnect)
		refuse(w, http.StatusMethodNotAllowed, keybrake.CodeMethodNotAllowed, "the peer protocol starts with CONNECT "+rpcPath)
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(tok))
	if !ok || subtle.ConstantTimeCompare(sum[:], h.token[:]) != 1 {
		h.log.Warn("peer connection refused: wrong or missing peer token", "remote", r.RemoteAddr)
		refuse(w, http.StatusUnauthorized, keybrake.CodeUnauthorized, "a peer must present the peer token (KEYBRAKE_PEER_TOKEN, or the one derived from the admin token)")
		return
	}
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		refuse(w, http.StatusInternalServerError, keybrake.CodeInternal, "cannot take over the connection")
		return
	}
	if !h.track(conn) {
		conn.Close()
		return
	}
	defer h.untrack(conn)
	conn.SetDeadline(time.Time{}) //nolint:errcheck // the server's read deadline must not cut a long-lived peer connection
	if _, err := io.WriteString(conn, "HTTP/1.0 "+connectedOK+"\r\n\r\n"); err != nil {
		conn.Close()
		return
	}
	// buf may hold bytes the client sent after its CONNECT (its first
	// calls): the codec reads through it.
	h.rpc.ServeConn(&bufferedConn{Conn: conn, r: buf.Reader})
}

func (h *Handler) track(c net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.conns[c] = struct{}{}
	return true
}

func (h *Handler) untrack(c net.Conn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
	c.Close() //nolint:errcheck // may be closed already
}

// Close closes every peer connection (http.Server.Shutdown does not: they
// were taken over) and refuses new ones. Call it once the other replicas
// stopped routing here (Router.Withdraw, then a beat).
func (h *Handler) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for c := range h.conns {
		c.Close() //nolint:errcheck // shutting down
	}
}

func refuse(w http.ResponseWriter, status int, code keybrake.Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg}}) //nolint:errcheck // the peer reads the status
}

// service is the net/rpc receiver: its exported methods are the protocol.
type service struct{ h *Handler }

// Decide decides one op with this replica's store, within the asking
// replica's deadline.
func (s *service) Decide(args *DecideArgs, reply *DecideReply) error {
	ctx, cancel := opContext(args.Timeout)
	defer cancel()
	s.h.received.Add(1)
	d, err := s.h.store.Decide(ctx, args.Attempt)
	d.Err = bare(d.Err)
	reply.Decision, reply.Err = d, toWire(err)
	return nil
}

// Settle settles one call with this replica's store.
func (s *service) Settle(args *SettleArgs, reply *SettleReply) error {
	ctx, cancel := opContext(args.Timeout)
	defer cancel()
	s.h.received.Add(1)
	u, err := s.h.store.Settle(ctx, args.Settlement)
	reply.Usage, reply.Err = u, toWire(err)
	return nil
}

func opContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), min(max(timeout, 0), maxTimeout))
}
