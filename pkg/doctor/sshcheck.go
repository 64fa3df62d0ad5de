package doctor

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// clientVersion is the line the doctor sends before reading the server's.
const clientVersion = "SSH-2.0-tunnel-doctor\r\n"

// kexStrict is what a server adds to its first KEXINIT when it supports
// OpenSSH's strict key exchange, the fix for Terrapin (CVE-2023-48795).
const kexStrict = "kex-strict-s-v00@openssh.com"

// checkSSH reads the jump host's version and cleartext KEXINIT and grades
// the algorithms it offers. It stops there: no key exchange is made.
func (r *runner) checkSSH(ctx context.Context) []Finding {
	const check = "ssh"
	if r.cfg.SSH == "" {
		return []Finding{local(info(check, "ssh.skipped", "the jump host was not checked: its address is unknown (pass --ssh HOST:PORT; an admin's login finds it in the gateway list)"))}
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", r.cfg.SSH)
	if err != nil {
		return []Finding{fail(check, "ssh.reachable", C, fmt.Sprintf("cannot reach the jump host at %s: %v", r.cfg.SSH, err),
			"check the gateway's --ssh-addr and firewalls, or the --ssh given to the doctor")}
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.Write([]byte(clientVersion)); err != nil {
		return []Finding{fail(check, "ssh.reachable", C, fmt.Sprintf("the jump host at %s closed the connection: %v", r.cfg.SSH, err), "check the gateway's log")}
	}
	version, k, err := ReadServerHello(c)
	if err != nil {
		return []Finding{fail(check, "ssh.reachable", C, fmt.Sprintf("the jump host at %s did not start an SSH handshake: %v", r.cfg.SSH, err),
			"check --ssh names the gateway's SSH jump host port")}
	}
	return SSHFindings(version, k)
}

// SSHFindings grades the algorithms an SSH server offers in its KEXINIT.
func SSHFindings(version string, k KexInit) []Finding {
	const check = "ssh"
	out := []Finding{info(check, "ssh.version", fmt.Sprintf("the jump host says %q", version))}
	ciphers := union(k.CiphersCS, k.CiphersSC)
	macs := union(k.MACsCS, k.MACsSC)
	algoFix := "the tunnel jump host offers only AEAD ciphers, SHA-2 MACs and curve25519/ECDH key exchange: check no other SSH server (or an old gateway) answers on this port"

	cbc := pick(ciphers, func(s string) bool { return strings.Contains(s, "-cbc") })
	broken := pick(ciphers, func(s string) bool { return s == "none" || strings.HasPrefix(s, "arcfour") })
	if len(broken) > 0 {
		out = append(out, fail(check, "ssh.ciphers.broken", F, "the jump host offers broken ciphers: "+strings.Join(broken, ", "), algoFix))
	}
	if len(cbc) > 0 {
		out = append(out, fail(check, "ssh.ciphers.cbc", C, "the jump host offers CBC ciphers: "+strings.Join(cbc, ", "), algoFix))
	}
	if len(broken)+len(cbc) == 0 {
		out = append(out, ok(check, "ssh.ciphers", "ciphers: "+strings.Join(ciphers, ", ")))
	}

	badMAC := pick(macs, func(s string) bool { return s == "none" || strings.Contains(s, "md5") })
	sha1MAC := pick(macs, func(s string) bool { return strings.Contains(s, "sha1") })
	if len(badMAC) > 0 {
		out = append(out, fail(check, "ssh.macs.broken", C, "the jump host offers broken MACs: "+strings.Join(badMAC, ", "), algoFix))
	}
	if len(sha1MAC) > 0 {
		out = append(out, warn(check, "ssh.macs.sha1", B, "the jump host offers SHA-1 MACs: "+strings.Join(sha1MAC, ", "), algoFix))
	}
	if len(badMAC)+len(sha1MAC) == 0 {
		out = append(out, ok(check, "ssh.macs", "MACs: "+strings.Join(macs, ", ")))
	}

	kexAlgos := pick(k.Kex, func(s string) bool { return !strings.HasPrefix(s, "kex-strict-") && !strings.HasPrefix(s, "ext-info-") })
	sha1Kex := pick(kexAlgos, func(s string) bool { return strings.HasSuffix(s, "-sha1") })
	if len(sha1Kex) > 0 {
		out = append(out, fail(check, "ssh.kex.sha1", C, "the jump host offers SHA-1 key exchanges: "+strings.Join(sha1Kex, ", "), algoFix))
	} else {
		out = append(out, ok(check, "ssh.kex", "key exchanges: "+strings.Join(kexAlgos, ", ")))
	}

	dss := pick(k.HostKey, func(s string) bool { return strings.HasPrefix(s, "ssh-dss") })
	sha1Sig := pick(k.HostKey, func(s string) bool { return s == "ssh-rsa" || s == "ssh-rsa-cert-v01@openssh.com" })
	if len(dss) > 0 {
		out = append(out, fail(check, "ssh.hostkey.dss", C, "the jump host offers DSA host key signatures: "+strings.Join(dss, ", "), algoFix))
	}
	if len(sha1Sig) > 0 {
		out = append(out, warn(check, "ssh.hostkey.sha1", B, "the jump host offers SHA-1 host key signatures: "+strings.Join(sha1Sig, ", "),
			"offer rsa-sha2-256/rsa-sha2-512 (or an Ed25519 host key) and not ssh-rsa"))
	}
	if len(dss)+len(sha1Sig) == 0 {
		out = append(out, ok(check, "ssh.hostkey", "host key signatures: "+strings.Join(k.HostKey, ", ")))
	}

	switch {
	case slices.Contains(k.Kex, kexStrict):
		out = append(out, ok(check, "ssh.strict_kex", "strict key exchange is offered (Terrapin, CVE-2023-48795, is prevented)"))
	case slices.Contains(ciphers, "chacha20-poly1305@openssh.com") || (len(cbc) > 0 && len(pick(macs, func(s string) bool { return strings.HasSuffix(s, "-etm@openssh.com") })) > 0):
		out = append(out, fail(check, "ssh.strict_kex", C, "the jump host does not offer strict key exchange and offers ChaCha20-Poly1305 or CBC with EtM MACs: it is vulnerable to Terrapin (CVE-2023-48795)",
			"upgrade the SSH server to one that offers "+kexStrict+" (OpenSSH 9.6+, golang.org/x/crypto 0.17+)"))
	default:
		out = append(out, warn(check, "ssh.strict_kex", B, "the jump host does not offer strict key exchange ("+kexStrict+")",
			"upgrade the SSH server to one that offers it (OpenSSH 9.6+, golang.org/x/crypto 0.17+)"))
	}
	return out
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func pick(l []string, f func(string) bool) []string {
	var out []string
	for _, s := range l {
		if f(s) {
			out = append(out, s)
		}
	}
	return out
}
