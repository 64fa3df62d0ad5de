// Package doctor grades a tunnel gateway's own endpoints from the outside,
// the way SSL Labs grades a web server: `tunnel doctor` runs it daily from
// cron or CI and alerts when the grade or a finding changes.
//
// Each check is a small function that returns [Finding]s: an identifier
// stable across runs, a severity, what was seen and what to do. The
// [Grade] of a [Report] is the lowest cap among the findings that concern
// the gateway (findings about this machine, such as its UDP buffers,
// advise without lowering the grade). The checks are independent: each
// has its own deadline, a check that fails or panics becomes a finding of
// its own, and the others still run.
//
//	API (HTTPS)   TLS versions, cipher suites below TLS 1.3, certificate
//	              chain to the cluster CA, names, expiry, key, signature
//	QUIC          reachability of the UDP port with the tunnel ALPN
//	UDP buffers   this machine's net.core.rmem_max / wmem_max
//	SSH           the jump host's algorithms from its cleartext KEXINIT
//	              (no CBC, no SHA-1, strict key exchange against Terrapin)
//	clock         skew against the gateway's HTTP Date
//	DNS           the SRV records of --dns-zone lead to the gateway
//
// The JSON form of a Report is stable (see docs/DOCTOR.md): fields are only
// ever added, and a finding's ID names the same condition in every version.
package doctor
