package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/keybrake/keybrake"
	"github.com/keybrake/keybrake/metrics"
	"github.com/keybrake/keybrake/peer"
	"github.com/keybrake/keybrake/store"
	"github.com/keybrake/keybrake/store/sqlstore"
)

// PeerConfig turns on routing between replicas (package peer): each key's
// ledger ops are decided by one replica, so that replicas behind a
// round-robin load balancer batch a hot key's calls together.
type PeerConfig struct {
	// Addr is the peer listener's address; empty: no routing.
	Addr string
	// URL is where the other replicas dial this one (http://HOST:PORT);
	// default: the bound address, when it names a host.
	URL string
	// Token authenticates replicas to each other; default: derived from
	// the admin token, which every replica of one database shares.
	Token string
}

// peerStore is what routing needs of the store beyond store.Store: the
// PostgreSQL store has it.
type peerStore interface {
	Lease() (time.Time, error)
	Peers() *sqlstore.Peers
}

// peerLocal is the router's local ledger: the store as the proxy sees it
// (instrumented), and the lease of the store underneath.
type peerLocal struct {
	store.Store
	lease func() (time.Time, error)
}

func (l peerLocal) Lease() (time.Time, error) { return l.lease() }

// peerToken is the token replicas present to each other when none is
// configured: an HMAC of the admin token, so the admin token itself never
// crosses the peer network.
func peerToken(adminToken string) string {
	m := hmac.New(sha256.New, []byte(adminToken))
	m.Write([]byte("keybrake peer token v1"))
	return hex.EncodeToString(m.Sum(nil))
}

func (c Config) validatePeer() error {
	if c.Peer.Addr == "" {
		if c.Peer.URL != "" {
			return errors.New("--peer-url is set without --peer-addr: routing between replicas needs a peer listener")
		}
		return nil
	}
	if !isPostgres(c.DB) {
		return errors.New("--peer-addr routes keys between replicas that share a PostgreSQL database; a SQLite store is one process and has no peers")
	}
	if c.Peer.URL != "" {
		u, err := url.Parse(c.Peer.URL)
		if err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.User != nil || u.RawQuery != "" {
			return fmt.Errorf("--peer-url %q: want http://HOST:PORT, the address the other replicas dial", c.Peer.URL)
		}
		return nil
	}
	if h, _, err := net.SplitHostPort(c.Peer.Addr); err == nil && unspecifiedHost(h) {
		return fmt.Errorf("--peer-addr %s listens on every interface: set --peer-url to the address the other replicas dial (for example http://$POD_IP:%s)", c.Peer.Addr, portOf(c.Peer.Addr))
	}
	return nil
}

func unspecifiedHost(h string) bool {
	ip := net.ParseIP(h)
	return h == "" || (ip != nil && ip.IsUnspecified())
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// setupPeer builds the router the proxy decides through and the handler
// the peer listener serves, once the listener is bound (its port may have
// been picked).
func (s *Server) setupPeer(ctx context.Context, raw store.Store, ln net.Listener) error {
	ps, ok := raw.(peerStore)
	if !ok {
		return errors.New("--peer-addr: this store cannot route between replicas")
	}
	token := s.cfg.Peer.Token
	if token == "" {
		token = peerToken(s.cfg.AdminToken)
	}
	u := s.cfg.Peer.URL
	if u == "" {
		u = "http://" + ln.Addr().String()
	}
	self := peer.Member{ID: keybrake.NewID("peer_"), URL: u}
	beats := ps.Peers()
	r, err := peer.NewRouter(ctx, peer.Config{
		Local: peerLocal{s.store, ps.Lease}, Self: self, Token: token, Logger: s.log,
		Beat: func(ctx context.Context, self peer.Member, fresh time.Duration) ([]peer.Member, error) {
			list, err := beats.Beat(ctx, self.ID, self.URL, fresh)
			ms := make([]peer.Member, len(list))
			for i, p := range list {
				ms[i] = peer.Member{ID: p.ID, URL: p.URL}
			}
			return ms, err
		},
		Withdraw: beats.Withdraw,
	})
	if err != nil {
		return err
	}
	s.router, s.peerH = r, peer.NewHandler(s.store, token, s.log)
	if s.metrics != nil {
		st, h := r.Stats(), s.peerH
		s.metrics.Peer(func() metrics.PeerCounts {
			return metrics.PeerCounts{Sent: st.Sent.Load(), Local: st.Local.Load(), Failed: st.Failed.Load(),
				Received: h.Received(), Replicas: int64(r.Replicas())}
		})
	}
	s.log.Info("routing keys between replicas", "peer_url", u, "peer_id", self.ID)
	return nil
}

// stopPeer leaves the other replicas' lists before the drain, so they stop
// sending ops here while this replica's own calls finish.
func (s *Server) withdrawPeer(ctx context.Context) (at time.Time, err error) {
	if s.router == nil {
		return time.Time{}, nil
	}
	err = s.router.Withdraw(ctx)
	return time.Now(), err
}

// closePeer closes the peer connections once the others have had a beat
// to see this replica gone (an op they send meanwhile is still decided).
func (s *Server) closePeer(ctx context.Context, withdrawn time.Time) {
	if s.router == nil {
		return
	}
	wait := time.Until(withdrawn.Add(peerSettle))
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	s.peerH.Close()
	s.router.Close()
}

// peerSettle is how long after withdrawing a replica keeps answering the
// ops others route to it: two of their beats.
const peerSettle = 2 * time.Second
