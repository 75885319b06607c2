package gitserver

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/deis/deis/coordinator/builder"
	"github.com/deis/deis/pkg/state"
	"github.com/gliderlabs/ssh"
	"github.com/prometheus/client_golang/prometheus"
	gossh "golang.org/x/crypto/ssh"
)

// Config configures a Server.
type Config struct {
	// Addr is the TCP listen address (default ":2222"; ":0" picks a port).
	Addr string
	// DataDir holds the host key (ssh_host_ed25519_key) and the
	// repositories (repos/NAME.git).
	DataDir string
	Store   *state.Store
	// HookCommand is the argv the pre-receive hook of every repository
	// execs, e.g. [/usr/bin/deis-coordinator hook --socket DATADIR/builder.sock].
	HookCommand []string
	// Claimer keeps each repository to the incarnation of its formation
	// (builder.Builder): before every session, what an older incarnation of
	// the name left is removed. Required.
	Claimer Claimer
	// GitBinary is the git program (default "git").
	GitBinary string
	Logger    *slog.Logger
	// Registerer, if set, receives the server's metrics.
	Registerer prometheus.Registerer

	// AuthTimeout closes a connection that has not authenticated this long
	// after it was accepted (default DefaultAuthTimeout).
	AuthTimeout time.Duration
	// MaxConns caps the connections held at once (default
	// DefaultMaxConns); MaxConnsPerIP caps them per source address (default
	// DefaultMaxConnsPerIP). A connection over a cap is closed at once.
	MaxConns, MaxConnsPerIP int
	// MaxPushBytes caps what a push may send (default DefaultMaxPushBytes).
	MaxPushBytes int64
	// SessionTimeout bounds a git command (default DefaultSessionTimeout);
	// a push's includes its build, so it must exceed the build time limit.
	SessionTimeout time.Duration
}

// Claimer makes a formation's directories (the builder's and the ones
// given, here the repository) belong to incarnation rev of formation f,
// removing what an older incarnation of the name left; it fails with
// builder.ErrIncarnationChanged when f is no longer incarnation rev.
// builder.Builder.Claim is the one the coordinator uses.
type Claimer interface {
	Claim(ctx context.Context, f string, rev int64, extra ...builder.FormationDir) error
}

// Defaults of the limits in Config.
const (
	DefaultAuthTimeout    = 10 * time.Second
	DefaultMaxConns       = 100
	DefaultMaxConnsPerIP  = 10
	DefaultMaxPushBytes   = 512 << 20
	DefaultSessionTimeout = time.Hour
)

// Server is the SSH git endpoint.
type Server struct {
	cfg    Config
	repos  string
	signer gossh.Signer
	srv    *ssh.Server
	m      *metrics
	limit  *connLimiter

	mu sync.Mutex
	ln net.Listener

	repoMu sync.Mutex // serializes creating repositories and writing hooks
}

// Permissions extensions set when a key is accepted.
const (
	extUser        = "deis-user"
	extFingerprint = "deis-fingerprint"
)

// keyLookupTimeout bounds the etcd read that checks a key.
const keyLookupTimeout = 10 * time.Second

// New checks cfg, loads (or on first start creates) the host key and
// creates the repositories directory. It does not listen yet.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.DataDir == "" || !filepath.IsAbs(cfg.DataDir):
		return nil, fmt.Errorf("gitserver: data directory %q must be an absolute path", cfg.DataDir)
	case cfg.Store == nil:
		return nil, errors.New("gitserver: no state store")
	case len(cfg.HookCommand) == 0:
		return nil, errors.New("gitserver: no hook command: pushes could not be built")
	case cfg.Claimer == nil:
		return nil, errors.New("gitserver: no claimer: repositories of destroyed formations could be served to the next owner of the name")
	case cfg.AuthTimeout < 0, cfg.MaxConns < 0, cfg.MaxConnsPerIP < 0, cfg.MaxPushBytes < 0, cfg.SessionTimeout < 0:
		return nil, errors.New("gitserver: the SSH and push limits must not be negative (0 picks the default)")
	}
	if cfg.AuthTimeout == 0 {
		cfg.AuthTimeout = DefaultAuthTimeout
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerIP == 0 {
		cfg.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if cfg.MaxPushBytes == 0 {
		cfg.MaxPushBytes = DefaultMaxPushBytes
	}
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = DefaultSessionTimeout
	}
	if cfg.Addr == "" {
		cfg.Addr = ":2222"
	}
	if cfg.GitBinary == "" {
		cfg.GitBinary = "git"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if _, err := exec.LookPath(cfg.GitBinary); err != nil {
		return nil, fmt.Errorf("gitserver: git not found (install git): %w", err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, repos: filepath.Join(cfg.DataDir, "repos"), m: m,
		limit: newConnLimiter(cfg.MaxConns, cfg.MaxConnsPerIP, cfg.AuthTimeout, cfg.Logger, m)}
	if err := os.MkdirAll(s.repos, 0o700); err != nil {
		return nil, fmt.Errorf("gitserver: %w", err)
	}
	signer, err := loadHostKey(filepath.Join(cfg.DataDir, "ssh_host_ed25519_key"))
	if err != nil {
		return nil, err
	}
	s.signer = signer
	s.srv = &ssh.Server{
		Handler:     s.handle,
		HostSigners: []ssh.Signer{signer},
		Version:     "deis",
		// No PTYs; forwarding, subsystems and X11 are refused because no
		// handler for them is installed.
		PtyCallback:          func(ssh.Context, ssh.Pty) bool { return false },
		ServerConfigCallback: s.sshConfig,
		// Caps and the authentication deadline (limits.go).
		ConnCallback: s.limit.accept,
		// git keeps a push's connection busy with keepalives while the hook
		// builds, so only dead or stalled connections reach this.
		IdleTimeout: 10 * time.Minute,
		// The hard stop behind SessionTimeout, which ends git politely.
		MaxTimeout: cfg.SessionTimeout + time.Minute,
	}
	return s, nil
}

// HostKeyFingerprint is the SHA256 fingerprint of the server's host key.
func (s *Server) HostKeyFingerprint() string { return gossh.FingerprintSHA256(s.signer.PublicKey()) }

// Listen binds Config.Addr so that Addr is known; ListenAndServe calls it
// when it has not been called.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("gitserver: listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the address the server listens on, once it does ("" before).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// ListenAndServe serves SSH until ctx ends; then it closes every connection
// and returns nil.
func (s *Server) ListenAndServe(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	s.cfg.Logger.Info("git server listening", "addr", ln.Addr().String(), "hostkey", s.HostKeyFingerprint())
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			s.srv.Close()
		case <-done:
		}
	}()
	err := s.srv.Serve(ln)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("gitserver: %w", err)
}

// sshConfig makes public keys the only way in. gliderlabs/ssh turns on
// NoClientAuth when none of its own auth handlers is set, so "none" is
// refused explicitly here; the public key callback is ours rather than
// gliderlabs' so that it can send the refused user a banner.
func (s *Server) sshConfig(ctx ssh.Context) *gossh.ServerConfig {
	lc, _ := ctx.Value(limitedConnKey{}).(*limitedConn)
	return &gossh.ServerConfig{
		// Called with a nil error once a key has been proven (a mere query
		// whether a key would do is not logged), which ends the
		// authentication deadline.
		AuthLogCallback: func(_ gossh.ConnMetadata, _ string, err error) {
			if err == nil && lc != nil {
				lc.authenticated()
			}
		},
		NoClientAuthCallback: func(gossh.ConnMetadata) (*gossh.Permissions, error) {
			return nil, errors.New("public key authentication required")
		},
		PublicKeyCallback: func(conn gossh.ConnMetadata, key gossh.PublicKey) (*gossh.Permissions, error) {
			return s.checkKey(ctx, conn, key)
		},
		MaxAuthTries: 10,
	}
}

// checkKey accepts a key registered in etcd. The permissions it returns are
// per key, so the session sees the key that signed, not merely one that
// was offered.
func (s *Server) checkKey(ctx context.Context, conn gossh.ConnMetadata, key gossh.PublicKey) (*gossh.Permissions, error) {
	fp := gossh.FingerprintSHA256(key)
	lctx, cancel := context.WithTimeout(ctx, keyLookupTimeout)
	defer cancel()
	var k state.SSHKey
	_, err := s.cfg.Store.Get(lctx, s.cfg.Store.Keys.SSHKey(state.SSHKeyID(fp)), &k)
	switch {
	case errors.Is(err, state.ErrNotFound):
		s.cfg.Logger.Info("unknown ssh key refused", "fingerprint", fp, "remote", conn.RemoteAddr().String())
		return nil, &gossh.BannerError{
			Err:     fmt.Errorf("key %s is not registered", fp),
			Message: fmt.Sprintf("deis: key %s is not registered: add it with deisctl keys:add\n", fp),
		}
	case err != nil:
		s.cfg.Logger.Warn("cannot check ssh key", "fingerprint", fp, "error", err)
		return nil, &gossh.BannerError{Err: err, Message: "deis: cannot check your key now (the platform's state store does not answer); try again later\n"}
	}
	if k.PublicKey != "" {
		want, _, _, _, err := gossh.ParseAuthorizedKey([]byte(k.PublicKey))
		if err != nil || !bytes.Equal(want.Marshal(), key.Marshal()) {
			s.cfg.Logger.Warn("registered key does not match its fingerprint", "fingerprint", fp)
			return nil, fmt.Errorf("key %s does not match its registration", fp)
		}
	}
	return &gossh.Permissions{Extensions: map[string]string{extUser: k.User, extFingerprint: fp}}, nil
}

// handle runs one session: checks the command, prepares the repository and
// runs git on it.
func (s *Server) handle(sess ssh.Session) {
	start := time.Now()
	ctx := sess.Context()
	var perms *gossh.Permissions
	if conn, ok := ctx.Value(ssh.ContextKeyConn).(*gossh.ServerConn); ok {
		perms = conn.Permissions
	}
	if perms == nil || perms.Extensions[extFingerprint] == "" { // cannot happen: auth requires a key
		fail(sess, errors.New("not authenticated"))
		return
	}
	user, fp := perms.Extensions[extUser], perms.Extensions[extFingerprint]
	log := s.cfg.Logger.With("user", user, "fingerprint", fp, "remote", sess.RemoteAddr().String())

	sub, name, err := parseCommand(sess.RawCommand())
	if err != nil {
		log.Info("ssh command refused", "command", sess.RawCommand(), "error", err)
		fail(sess, err)
		return
	}
	log = log.With("formation", name, "command", sub)
	// The session is for one incarnation of the formation (its key's
	// CreateRevision), read before and after the permission check: a user
	// allowed on a formation destroyed meanwhile never reaches the one
	// created since with the same name.
	inc, err := s.incarnation(ctx, name)
	if err != nil {
		log.Warn("cannot read formation", "error", err)
		fail(sess, err)
		return
	}
	// Permission first, so that a user who may not access a formation does
	// not learn whether it exists.
	if err := s.authorize(ctx, user, name, sub); err != nil {
		log.Info("ssh session refused", "error", err)
		fail(sess, err)
		return
	}
	again, err := s.incarnation(ctx, name)
	switch {
	case err != nil:
		log.Warn("cannot read formation", "error", err)
		fail(sess, err)
		return
	case again != inc:
		log.Info("ssh session refused: formation destroyed or created meanwhile", "incarnation", inc, "now", again)
		fail(sess, errRecreated(name))
		return
	case inc == 0:
		fail(sess, fmt.Errorf("formation %q not found: create it with deisctl formations:create %s", name, name))
		return
	}
	log = log.With("incarnation", inc)
	dir, err := s.prepareRepo(ctx, name, inc)
	if err != nil { // prepareRepo logged the cause
		log.Info("ssh session refused", "error", err)
		fail(sess, err)
		return
	}
	gctx, cancel := context.WithTimeout(ctx, s.cfg.SessionTimeout)
	defer cancel()
	code := s.runGit(gctx, sess, sub, dir, inc)
	if errors.Is(gctx.Err(), context.DeadlineExceeded) {
		fmt.Fprintf(sess.Stderr(), "deis: the session exceeded its %s time limit and was ended\n", s.cfg.SessionTimeout)
		code = 1
	}
	log.Info("git session", "status", code, "duration", time.Since(start).Round(time.Millisecond).String())
	sess.Exit(code)
}

// incarnation reads formation f's incarnation (0: it does not exist), with
// an error for the user when it cannot.
func (s *Server) incarnation(ctx context.Context, f string) (int64, error) {
	lctx, cancel := context.WithTimeout(ctx, keyLookupTimeout)
	defer cancel()
	rev, err := s.cfg.Store.Incarnation(lctx, f)
	if err != nil {
		return 0, errors.New("cannot read the formation now (the platform's state store does not answer); try again later")
	}
	return rev, nil
}

// errRecreated is the answer to a session whose formation was destroyed or
// created while it started.
func errRecreated(f string) error {
	return fmt.Errorf("formation %q was destroyed or created again while your session started: try again", f)
}

// authorize lets user run git subcommand sub on formation f's repository
// if the user is an admin or holds a permission on f (state.Store.MayAccess;
// keys of user "admin" without a user record count as an admin's).
func (s *Server) authorize(ctx context.Context, user, f, sub string) error {
	lctx, cancel := context.WithTimeout(ctx, keyLookupTimeout)
	defer cancel()
	ok, err := s.cfg.Store.MayAccess(lctx, f, user)
	if err != nil {
		s.cfg.Logger.Warn("cannot check permissions", "user", user, "formation", f, "error", err)
		return errors.New("cannot check your permissions now (the platform's state store does not answer); try again later")
	}
	if ok {
		return nil
	}
	verb := "push to"
	if sub == "upload-pack" {
		verb = "fetch from"
	}
	return fmt.Errorf("user %s may not %s formation %s: ask an admin to run deisctl perms:grant %s -f %s", user, verb, f, user, f)
}

func fail(sess ssh.Session, err error) {
	fmt.Fprintf(sess.Stderr(), "deis: %s\n", err)
	sess.Exit(1)
}

// gitProtocol is the shape of a valid GIT_PROTOCOL value ("version=2").
var gitProtocol = regexp.MustCompile(`^[a-z0-9=:.]{1,64}$`)

// runGit runs `git SUB DIR` with the session as its stdin, stdout and
// stderr, and returns its exit status. A push may send at most
// Config.MaxPushBytes: the copy into git's stdin stops before the first byte
// over, and git, at the end of its input, discards what it received (its
// quarantine); receive.maxInputSize holds the same limit inside git.
//
// The hook learns the incarnation the session is for from DEIS_INCARNATION
// (RunHook), so that the build releases nothing if the formation is
// destroyed and created again before the push is built.
func (s *Server) runGit(ctx context.Context, sess ssh.Session, sub, dir string, inc int64) int {
	args := []string{sub, dir}
	var limit int64
	if sub == "receive-pack" {
		limit = s.cfg.MaxPushBytes
		args = []string{"-c", fmt.Sprintf("receive.maxInputSize=%d", limit), sub, dir}
	}
	cmd := exec.CommandContext(ctx, s.cfg.GitBinary, args...)
	// When the session ends early (the client left, the time limit), git
	// and the hook it runs get SIGTERM together, in their own process
	// group, so a hook does not go on building for a push that is gone;
	// WaitDelay then kills git.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, incarnationEnv+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, fmt.Sprintf("%s=%d", incarnationEnv, inc))
	for _, kv := range sess.Environ() { // the client may ask for protocol v2
		if v, ok := strings.CutPrefix(kv, "GIT_PROTOCOL="); ok && gitProtocol.MatchString(v) {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	cmd.Stdout = sess
	cmd.Stderr = sess.Stderr()
	cmd.WaitDelay = 10 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		fmt.Fprintf(sess.Stderr(), "deis: %v\n", err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		s.cfg.Logger.Error("cannot run git", "error", err)
		fmt.Fprintln(sess.Stderr(), "deis: the server could not run git")
		return 1
	}
	// Not waited for: the client may keep its side open after git is done.
	var tooLarge atomic.Bool
	go func() {
		defer stdin.Close()
		if copyLimited(stdin, sess, limit) {
			tooLarge.Store(true)
			s.m.pushRefused.WithLabelValues("too_large").Inc()
			s.cfg.Logger.Info("push refused: too large", "repo", dir, "limit", limit)
			fmt.Fprintf(sess.Stderr(), "deis: push is larger than the %s limit (--max-push-bytes): nothing was stored; make the repository smaller (large files belong in object storage, not in git)\n", state.HumanBytes(limit))
		}
	}()
	err = cmd.Wait()
	if tooLarge.Load() {
		return 1
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit) && exit.ExitCode() > 0:
		return exit.ExitCode()
	default:
		return 1
	}
}

// copyLimited copies src to dst until src ends, dst fails or, with a
// positive limit, the next read would take the total past limit; it
// reports the latter, and then dst has received no byte over the limit.
func copyLimited(dst io.Writer, src io.Reader, limit int64) (over bool) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, rerr := src.Read(buf)
		if k > 0 {
			if limit > 0 && n+int64(k) > limit {
				return true
			}
			n += int64(k)
			if _, err := dst.Write(buf[:k]); err != nil {
				return false
			}
		}
		if rerr != nil {
			return false
		}
	}
}

// claimWait bounds how long a session waits for a build of a formation's
// previous incarnation to end before its repository can be replaced.
const claimWait = time.Minute

// prepareRepo makes sure the repository of formation name belongs to its
// incarnation inc (Config.Claimer removes one an older incarnation of the
// name left, so a clone right after a formation was destroyed and created
// again is empty, even before the coordinator's purge pass), creates it on
// first use and (re)writes its pre-receive hook. Its errors are for the
// user.
func (s *Server) prepareRepo(ctx context.Context, name string, inc int64) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, claimWait)
	defer cancel()
	if err := s.cfg.Claimer.Claim(cctx, name, inc, ReposFormationDir(s.cfg.DataDir)); err != nil {
		switch {
		case errors.Is(err, builder.ErrIncarnationChanged):
			return "", errRecreated(name)
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			s.cfg.Logger.Warn("cannot claim the repository: a build of the formation's previous incarnation is running", "formation", name, "error", err)
			return "", fmt.Errorf("formation %q was destroyed and created again, and a build of the old one is still running: its files are removed when it ends; try again in a few minutes", name)
		}
		s.cfg.Logger.Error("cannot claim the repository", "formation", name, "error", err)
		return "", errors.New("the server could not prepare the repository; the operator can find why in the coordinator's log")
	}
	dir, err := s.initRepo(ctx, name)
	if err != nil {
		s.cfg.Logger.Error("cannot prepare repository", "formation", name, "error", err)
		return "", errors.New("the server could not prepare the repository; the operator can find why in the coordinator's log")
	}
	return dir, nil
}

// initRepo creates the bare repository of a formation on first use and
// (re)writes its pre-receive hook.
func (s *Server) initRepo(ctx context.Context, name string) (string, error) {
	s.repoMu.Lock()
	defer s.repoMu.Unlock()
	dir := filepath.Join(s.repos, name+".git")
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); errors.Is(err, fs.ErrNotExist) {
		tmp := dir + ".new"
		os.RemoveAll(tmp)
		out, err := exec.CommandContext(ctx, s.cfg.GitBinary, "-c", "init.defaultBranch=main", "init", "--quiet", "--bare", tmp).CombinedOutput()
		if err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("gitserver: git init %s: %w: %s", dir, err, strings.TrimSpace(string(out)))
		}
		if err := os.Rename(tmp, dir); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("gitserver: %w", err)
		}
		s.cfg.Logger.Info("repository created", "formation", name, "path", dir)
	} else if err != nil {
		return "", fmt.Errorf("gitserver: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, "hooks", "pre-receive"), []byte(hookScript(s.cfg.HookCommand)), 0o755); err != nil {
		return "", fmt.Errorf("gitserver: write hook: %w", err)
	}
	s.removeStaleQuarantines(dir)
	return dir, nil
}

// removeStaleQuarantines removes what git receive-pack left of pushes it
// did not finish (it keeps a push's objects in objects/tmp_objdir-incoming-*
// until the refs are updated, and leaves the directory when it is killed).
// A directory not modified for longer than a session may last belongs to
// no running push.
func (s *Server) removeStaleQuarantines(dir string) {
	stale := time.Now().Add(-(s.cfg.SessionTimeout + 2*time.Minute))
	matches, _ := filepath.Glob(filepath.Join(dir, "objects", "tmp_objdir-incoming-*"))
	for _, m := range matches {
		if st, err := os.Lstat(m); err == nil && st.ModTime().Before(stale) {
			if err := os.RemoveAll(m); err != nil {
				s.cfg.Logger.Warn("cannot remove an abandoned push", "path", m, "error", err)
				continue
			}
			s.cfg.Logger.Info("removed an abandoned push", "path", m)
		}
	}
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// loadHostKey reads the host key, generating it on first start.
func loadHostKey(path string) (gossh.Signer, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		signer, err := gossh.ParsePrivateKey(data)
		if err != nil {
			return nil, fmt.Errorf("gitserver: host key %s is unreadable (move it away to make a new one): %w", path, err)
		}
		return signer, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("gitserver: host key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("gitserver: generate host key: %w", err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "deis coordinator")
	if err != nil {
		return nil, fmt.Errorf("gitserver: encode host key: %w", err)
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("gitserver: %w", err)
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, fmt.Errorf("gitserver: save host key: %w", err)
	}
	pub := gossh.MarshalAuthorizedKey(signer.PublicKey())
	if err := writeFileAtomic(path+".pub", pub, 0o644); err != nil {
		return nil, fmt.Errorf("gitserver: save host key: %w", err)
	}
	return signer, nil
}
