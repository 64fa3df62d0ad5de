// Package sshdtest runs a real OpenSSH sshd (/usr/sbin/sshd) on a loopback
// port for end-to-end tests, configured for certificate-only authentication
// against the user CA keys the test supplies.
//
// sshd logs to stderr (-e, LogLevel VERBOSE); the log is saved in the test's
// temp dir and printed with t.Log when the test fails: it is the main way to
// find out why an authentication was refused.
//
// As root, sshd runs with full privilege separation (it needs /run/sshd and the
// sshd user, both provided by the openssh-server package; /run/sshd is created
// when missing) and any user, including root, can log in with a certificate.
// As a normal user sshd still runs on the high port but can only log in the
// user running the tests (see testenv.CurrentUser).
package sshdtest

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/integration/internal/testenv"
)

// DefaultSSHDPath is where Debian's openssh-server installs sshd.
const DefaultSSHDPath = "/usr/sbin/sshd"

// startTimeout bounds how long Start waits for sshd to accept connections.
const startTimeout = 15 * time.Second

// Algorithm lists written to sshd_config. ExtraConfig can override them (its
// lines come first, and sshd uses the first value it reads for a keyword).
var (
	PubkeyAcceptedAlgorithms = []string{
		"ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com",
		"ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256-cert-v01@openssh.com",
	}
	CASignatureAlgorithms = []string{
		"ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
	}
	KexAlgorithms = []string{
		"sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org",
		"ecdh-sha2-nistp256",
	}
	Ciphers = []string{
		"chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
		"aes128-ctr", "aes256-ctr",
	}
	MACs = []string{
		"hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com",
		"hmac-sha2-256", "hmac-sha2-512",
	}
)

// Config describes the sshd to start. The zero value starts an sshd that
// trusts no CA (so nobody can log in).
type Config struct {
	// TrustedUserCAKeys are written to the TrustedUserCAKeys file. A
	// certificate is accepted for user U when it is signed by one of them and
	// lists U as a principal.
	TrustedUserCAKeys []ssh.PublicKey

	// HostKey is the host private key (ed25519.PrivateKey, *ecdsa.PrivateKey
	// or *rsa.PrivateKey: anything ssh.MarshalPrivateKey accepts). It is a
	// crypto.Signer rather than an ssh.Signer because sshd needs the private
	// key in a file and an ssh.Signer cannot be serialized. Default: a fresh
	// ed25519 key.
	HostKey crypto.Signer

	// HostCertificate, if set, is written next to the host key and
	// configured with HostCertificate. It must certify HostKey's public key
	// (so HostKey must be set too).
	HostCertificate *ssh.Certificate

	// RevokedKeys, if set, are written (one authorized_keys line each) to a
	// file named by RevokedKeys. Listing a user's public key revokes every
	// certificate for it; listing a CA key revokes everything it signed.
	RevokedKeys []ssh.PublicKey

	// ExtraConfig are extra sshd_config lines. Lines before the first
	// "Match" line are written at the top, so they override the defaults
	// (sshd keeps the first value of a keyword); from a "Match" line on they
	// are written at the end.
	ExtraConfig []string
}

// Server is a running sshd.
type Server struct {
	Addr string // "127.0.0.1:PORT"
	Host string // "127.0.0.1"
	Port int

	HostKey        ssh.PublicKey // the host public key sshd presents
	HostSigner     ssh.Signer    // the host private key, as an ssh.Signer
	KnownHostsFile string        // "[127.0.0.1]:PORT <HostKey>", for ssh -o UserKnownHostsFile

	Dir        string // temp dir holding the config, keys and log
	ConfigFile string // sshd_config path
	LogFile    string // sshd's stderr (-e)
	SSHDPath   string // absolute path of the sshd binary

	p *proc
}

// proc is one sshd process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been reaped
	err  error         // cmd.Wait result, valid after done is closed
	once sync.Once
}

// Start writes an sshd_config in a temp dir, starts sshd -D -e on a free
// loopback port, and waits until it answers with an SSH banner. sshd is killed
// (and waited for) in t.Cleanup; its log is printed if the test failed.
//
// If sshd is not installed the test is skipped, or failed when CI is set.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()

	sshd := findSSHD(t)
	if os.Geteuid() == 0 {
		// Privilege separation directory (chroot for the pre-auth child).
		// Normally created by systemd's RuntimeDirectory, which we bypass.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("sshdtest: creating /run/sshd: %v", err)
		}
	}

	dir := t.TempDir()
	s := &Server{Host: "127.0.0.1", Dir: dir, SSHDPath: sshd}

	hostKey := cfg.HostKey
	if hostKey == nil {
		if cfg.HostCertificate != nil {
			t.Fatalf("sshdtest: Config.HostCertificate set without Config.HostKey")
		}
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatalf("sshdtest: generating host key: %v", err)
		}
		hostKey = priv
	}
	signer, err := ssh.NewSignerFromSigner(hostKey)
	if err != nil {
		t.Fatalf("sshdtest: host key: %v", err)
	}
	s.HostSigner = signer
	s.HostKey = signer.PublicKey()
	hostKeyFile := filepath.Join(dir, "ssh_host_key")
	WritePrivateKey(t, hostKeyFile, hostKey)

	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }

	// ExtraConfig before the first Match goes first so it wins.
	var extraTop, extraMatch []string
	for i, l := range cfg.ExtraConfig {
		if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], "Match") {
			extraMatch = cfg.ExtraConfig[i:]
			break
		}
		extraTop = append(extraTop, l)
	}
	if len(extraTop) > 0 {
		add("# Config.ExtraConfig")
		lines = append(lines, extraTop...)
		add("# sshdtest defaults")
	}

	add("HostKey %s", quote(hostKeyFile))
	if cfg.HostCertificate != nil {
		if !bytes.Equal(cfg.HostCertificate.Key.Marshal(), s.HostKey.Marshal()) {
			t.Fatalf("sshdtest: Config.HostCertificate does not certify Config.HostKey")
		}
		certFile := hostKeyFile + "-cert.pub"
		writeFile(t, certFile, ssh.MarshalAuthorizedKey(cfg.HostCertificate), 0o644)
		add("HostCertificate %s", quote(certFile))
	}
	if len(cfg.TrustedUserCAKeys) > 0 {
		caFile := filepath.Join(dir, "trusted_user_ca_keys")
		writeFile(t, caFile, authorizedKeys(cfg.TrustedUserCAKeys), 0o644)
		add("TrustedUserCAKeys %s", quote(caFile))
	}
	if len(cfg.RevokedKeys) > 0 {
		revFile := filepath.Join(dir, "revoked_keys")
		writeFile(t, revFile, authorizedKeys(cfg.RevokedKeys), 0o644)
		add("RevokedKeys %s", quote(revFile))
	}
	add("PidFile none")
	add("UsePAM no")
	add("PasswordAuthentication no")
	add("KbdInteractiveAuthentication no")
	add("HostbasedAuthentication no")
	add("PubkeyAuthentication yes")
	add("AuthorizedKeysFile none")
	add("StrictModes no")
	add("PermitRootLogin prohibit-password")
	add("LogLevel VERBOSE")
	add("PubkeyAcceptedAlgorithms %s", strings.Join(PubkeyAcceptedAlgorithms, ","))
	add("HostKeyAlgorithms %s", strings.Join(hostKeyAlgorithms(s.HostKey), ","))
	add("CASignatureAlgorithms %s", strings.Join(CASignatureAlgorithms, ","))
	add("KexAlgorithms %s", strings.Join(KexAlgorithms, ","))
	add("Ciphers %s", strings.Join(Ciphers, ","))
	add("MACs %s", strings.Join(MACs, ","))
	add("Subsystem sftp internal-sftp")
	add("UseDNS no")
	add("PrintMotd no")
	add("PrintLastLog no")
	add("X11Forwarding no")
	add("LoginGraceTime 30")
	add("MaxStartups 100")
	add("MaxSessions 100")
	if len(extraMatch) > 0 {
		add("# Config.ExtraConfig (Match blocks)")
		lines = append(lines, extraMatch...)
	}

	s.LogFile = filepath.Join(dir, "sshd.log")
	s.ConfigFile = filepath.Join(dir, "sshd_config")

	// The port is picked before sshd binds it, so another process may take
	// it in between: retry with a new port when that happens.
	const attempts = 3
	for attempt := 1; ; attempt++ {
		s.Port = testenv.FreePort(t)
		s.Addr = net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
		conf := append([]string{fmt.Sprintf("ListenAddress %s", s.Addr)}, lines...)
		writeFile(t, s.ConfigFile, []byte(strings.Join(conf, "\n")+"\n"), 0o600)

		err := s.start(t)
		if err == nil {
			break
		}
		log := s.Log()
		if attempt < attempts && strings.Contains(log, "Address already in use") {
			t.Logf("sshdtest: port %d taken, retrying: %v", s.Port, err)
			continue
		}
		t.Fatalf("sshdtest: starting %s: %v\nsshd_config:\n%s\nsshd log:\n%s",
			sshd, err, strings.Join(conf, "\n"), log)
	}

	known := fmt.Sprintf("[%s]:%d %s", s.Host, s.Port, ssh.MarshalAuthorizedKey(s.HostKey))
	s.KnownHostsFile = filepath.Join(dir, "known_hosts")
	writeFile(t, s.KnownHostsFile, []byte(known), 0o644)
	return s
}

// start runs sshd once with the current config and waits for its banner. On
// error the process has been reaped. On success it registers the cleanup.
func (s *Server) start(t testing.TB) error {
	logf, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy

	// -D: stay in the foreground; -e: log to stderr. A file (not a pipe) as
	// stderr means Wait does not wait for per-connection children that
	// outlive the listener.
	cmd := exec.Command(s.SSHDPath, "-D", "-e", "-f", s.ConfigFile)
	cmd.Stdin = nil
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Dir = s.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	s.p = p
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()

	if err := s.waitBanner(startTimeout); err != nil {
		s.stop()
		return err
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("sshdtest: sshd on %s log (%s):\n%s", s.Addr, s.LogFile, s.Log())
		}
	})
	return nil
}

// waitBanner polls until sshd's listener answers with an SSH banner.
func (s *Server) waitBanner(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	var lastErr error
	for {
		select {
		case <-s.p.done:
			return fmt.Errorf("sshd exited before accepting connections: %v", s.p.err)
		default:
		}
		if lastErr = s.probe(); lastErr == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd did not accept connections on %s within %v: %v", s.Addr, timeout, lastErr)
		}
		time.Sleep(delay)
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}

func (s *Server) probe() error {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading banner: %w", err)
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		return fmt.Errorf("unexpected banner %q (another program on the port?)", strings.TrimSpace(line))
	}
	return nil
}

// stop terminates sshd's process group and reaps it. Idempotent.
func (s *Server) stop() {
	p := s.p
	p.once.Do(func() {
		pid := p.cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-p.done
		}
	})
}

// Stop stops sshd now (it is also stopped in t.Cleanup).
func (s *Server) Stop() { s.stop() }

// Log returns what sshd has logged so far.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.LogFile)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", s.LogFile, err)
	}
	return string(b)
}

// SSHArgs returns OpenSSH client arguments to connect to s with the given
// private key file and certificate file (either may be ""), ignoring the
// user's ~/.ssh/config and pinning the host key (no trust on first use). Append
// "USER@127.0.0.1" (or "-l USER 127.0.0.1") and the command.
func (s *Server) SSHArgs(keyFile, certFile string) []string {
	args := []string{"-F", "/dev/null"}
	if keyFile != "" {
		args = append(args, "-i", keyFile)
	}
	if certFile != "" {
		args = append(args, "-o", "CertificateFile="+certFile)
	}
	return append(args,
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile="+s.KnownHostsFile,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "UpdateHostKeys=no",
		"-o", "BatchMode=yes",
		"-o", "ConnectTimeout=5",
		"-p", strconv.Itoa(s.Port),
	)
}

// WriteIdentity writes priv (0600) and, if cert is non-nil, its certificate
// (0644) into a new temp dir, named like ssh-keygen would (id, id-cert.pub),
// and returns their paths (certFile is "" without a cert).
func WriteIdentity(t testing.TB, priv crypto.Signer, cert *ssh.Certificate) (keyFile, certFile string) {
	t.Helper()
	dir := t.TempDir()
	keyFile = filepath.Join(dir, "id")
	WritePrivateKey(t, keyFile, priv)
	if cert != nil {
		certFile = keyFile + "-cert.pub"
		writeFile(t, certFile, ssh.MarshalAuthorizedKey(cert), 0o644)
	}
	return keyFile, certFile
}

// WritePrivateKey writes priv to path in OpenSSH format with mode 0600.
func WritePrivateKey(t testing.TB, path string, priv crypto.Signer) {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(priv, "sshdtest")
	if err != nil {
		t.Fatalf("sshdtest: marshaling private key: %v", err)
	}
	writeFile(t, path, pem.EncodeToMemory(block), 0o600)
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatalf("sshdtest: %v", err)
	}
	if err := os.Chmod(path, mode); err != nil { // WriteFile keeps an existing file's mode
		t.Fatalf("sshdtest: %v", err)
	}
}

func authorizedKeys(keys []ssh.PublicKey) []byte {
	var b bytes.Buffer
	for _, k := range keys {
		b.Write(ssh.MarshalAuthorizedKey(k))
	}
	return b.Bytes()
}

// hostKeyAlgorithms is PubkeyAcceptedAlgorithms plus whatever the host key
// needs if its type is not in there.
func hostKeyAlgorithms(k ssh.PublicKey) []string {
	algs := append([]string(nil), PubkeyAcceptedAlgorithms...)
	var need []string
	switch k.Type() {
	case ssh.KeyAlgoRSA:
		need = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
			ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSASHA256v01}
	default:
		need = []string{k.Type(), certAlgo(k.Type())}
	}
	for _, n := range need {
		if n != "" && !slices.Contains(algs, n) {
			algs = append(algs, n)
		}
	}
	return algs
}

func certAlgo(keyType string) string {
	switch keyType {
	case ssh.KeyAlgoED25519:
		return ssh.CertAlgoED25519v01
	case ssh.KeyAlgoECDSA256:
		return ssh.CertAlgoECDSA256v01
	case ssh.KeyAlgoECDSA384:
		return ssh.CertAlgoECDSA384v01
	case ssh.KeyAlgoECDSA521:
		return ssh.CertAlgoECDSA521v01
	}
	return ""
}

// quote quotes a path for sshd_config (which splits arguments on spaces).
func quote(p string) string {
	if strings.ContainsAny(p, " \t\"") {
		return `"` + p + `"`
	}
	return p
}

// findSSHD returns the absolute path of sshd, or skips/fails the test.
func findSSHD(t testing.TB) string {
	t.Helper()
	if p, err := testenv.FindProgram(DefaultSSHDPath); err == nil {
		return p
	}
	if p, err := testenv.FindProgram("sshd"); err == nil {
		return p
	}
	testenv.Missing(t, "sshd not found at %s or in PATH (Debian package openssh-server)", DefaultSSHDPath)
	return ""
}
