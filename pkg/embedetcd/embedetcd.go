package embedetcd

import (
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running embedded etcd.
type Server struct {
	etcd *embed.Etcd
	// ClientURL is where clients connect.
	ClientURL string
}

// TLS are the certificate files of a secured etcd: it serves clients and
// peers with CertFile (both usages: a peer certificate), requires a client
// certificate issued by TrustedCAFile from every client and peer, and takes
// a client certificate's Common Name as the etcd user of its requests.
type TLS struct {
	CertFile, KeyFile, TrustedCAFile string
}

// Start runs etcd with its data in dir, serving clients on clientURL and
// peers on peerURL (both loopback), and waits until it is ready.
func Start(dir, clientURL, peerURL string) (*Server, error) {
	return StartTLS(dir, clientURL, peerURL, nil)
}

// StartTLS is Start with TLS and client certificate authentication on both
// the client and the peer URLs (which must then be https) when t is not
// nil. Plain HTTP to it is refused.
func StartTLS(dir, clientURL, peerURL string, t *TLS) (*Server, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.Name = "deis"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cu, err := url.Parse(clientURL)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: client URL: %w", err)
	}
	pu, err := url.Parse(peerURL)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: peer URL: %w", err)
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + peerURL
	if t != nil {
		if cu.Scheme != "https" || pu.Scheme != "https" {
			return nil, fmt.Errorf("embedetcd: with TLS the client and peer URLs must be https (got %s, %s)", clientURL, peerURL)
		}
		info := transport.TLSInfo{CertFile: t.CertFile, KeyFile: t.KeyFile, TrustedCAFile: t.TrustedCAFile, ClientCertAuth: true}
		cfg.ClientTLSInfo, cfg.PeerTLSInfo = info, info
	}
	cfg.AutoCompactionMode = "revision"
	cfg.AutoCompactionRetention = "10000"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: start in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedetcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedetcd: not ready after 60s")
	}
	return &Server{etcd: e, ClientURL: clientURL}, nil
}

// Err reports a fatal server error.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops etcd.
func (s *Server) Close() { s.etcd.Close() }
