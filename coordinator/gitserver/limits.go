package gitserver

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gliderlabs/ssh"
)

// Reasons a connection is closed by the limiter (the metric's label).
const (
	closedMaxConns      = "max_conns"
	closedMaxConnsPerIP = "max_conns_per_ip"
	closedAuthTimeout   = "auth_timeout"
)

// refusalLogEvery bounds how often refused connections are logged, so that
// a flood of connections does not become a flood of log lines.
const refusalLogEvery = time.Second

// connLimiter caps the connections held at once, in total and per source
// address, and closes a connection that has not authenticated within
// authTimeout. It is the ssh.Server's ConnCallback.
type connLimiter struct {
	max, perIP  int
	authTimeout time.Duration
	log         *slog.Logger
	m           *metrics

	mu         sync.Mutex
	total      int
	byIP       map[string]int
	lastLog    time.Time
	suppressed int
}

func newConnLimiter(max, perIP int, authTimeout time.Duration, log *slog.Logger, m *metrics) *connLimiter {
	return &connLimiter{max: max, perIP: perIP, authTimeout: authTimeout, log: log, m: m, byIP: map[string]int{}}
}

// limitedConnKey is where accept leaves the connection in the ssh.Context,
// for the server config's AuthLogCallback.
type limitedConnKey struct{}

// accept admits c or, over a cap, returns nil (gliderlabs/ssh then closes
// c at once, before the SSH version exchange).
func (l *connLimiter) accept(ctx ssh.Context, c net.Conn) net.Conn {
	ip := sourceIP(c.RemoteAddr())
	l.mu.Lock()
	reason := ""
	switch {
	case l.total >= l.max:
		reason = closedMaxConns
	case l.byIP[ip] >= l.perIP:
		reason = closedMaxConnsPerIP
	default:
		l.total++
		l.byIP[ip]++
	}
	var logNow bool
	var suppressed int
	if reason != "" {
		if now := time.Now(); now.Sub(l.lastLog) >= refusalLogEvery {
			logNow, suppressed, l.lastLog, l.suppressed = true, l.suppressed, now, 0
		} else {
			l.suppressed++
		}
	}
	total, fromIP := l.total, l.byIP[ip]
	l.mu.Unlock()
	if reason != "" {
		l.m.closed.WithLabelValues(reason).Inc()
		if logNow {
			l.log.Warn("ssh connection refused: too many connections", "remote", c.RemoteAddr().String(), "reason", reason,
				"connections", total, "from_address", fromIP, "max_conns", l.max, "max_conns_per_ip", l.perIP,
				"refusals_not_logged", suppressed)
		}
		// SSH allows lines before the version; OpenSSH shows them with -v.
		c.SetWriteDeadline(time.Now().Add(time.Second))
		fmt.Fprintf(c, "deis: %s\r\n", refusalText(reason, ip))
		return nil
	}
	l.m.conns.Inc()
	lc := &limitedConn{Conn: c, l: l, ip: ip}
	// Armed only once lc.timer is set, so that expire and Close see it.
	lc.timer = time.AfterFunc(time.Duration(math.MaxInt64), lc.expire)
	lc.timer.Reset(l.authTimeout)
	ctx.SetValue(limitedConnKey{}, lc)
	return lc
}

func (l *connLimiter) release(ip string) {
	l.mu.Lock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
	l.mu.Unlock()
	l.m.conns.Dec()
}

func refusalText(reason, ip string) string {
	if reason == closedMaxConnsPerIP {
		return "too many connections from " + ip + "; close some or try again later"
	}
	return "too many connections; try again later"
}

// sourceIP is the address part of a remote address.
func sourceIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// Authentication states of a limitedConn.
const (
	authPending int32 = iota
	authDone
	authExpired
)

// limitedConn is an admitted connection: it holds its place under the caps
// until it is closed, and is closed by its timer unless it authenticates
// first.
type limitedConn struct {
	net.Conn
	l     *connLimiter
	ip    string
	timer *time.Timer
	state atomic.Int32
	once  sync.Once
}

// authenticated stops the authentication deadline; from then on only the
// server's idle and session limits apply.
func (c *limitedConn) authenticated() {
	if c.state.CompareAndSwap(authPending, authDone) {
		c.timer.Stop()
	}
}

func (c *limitedConn) expire() {
	if !c.state.CompareAndSwap(authPending, authExpired) {
		return
	}
	c.l.m.closed.WithLabelValues(closedAuthTimeout).Inc()
	c.l.log.Info("ssh connection closed: not authenticated in time", "remote", c.RemoteAddr().String(), "timeout", c.l.authTimeout.String())
	c.Close()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.timer.Stop()
		c.l.release(c.ip)
	})
	return err
}
