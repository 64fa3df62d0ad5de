// Package hostile holds the attack clients of the hostile-client suite
// (integration/hostile_test.go): what port scanners, load-balancer health
// checks, fuzzers and slow clients send to a listener, and what it takes
// to see whether the process behind survived.
//
//   - payloads: random bytes, protocol banners, a real TLS ClientHello and
//     a real SSH KEXINIT captured from the standard clients, QUIC Initial
//     packets (real ones captured from quic-go, and junk with a valid-looking
//     long header);
//   - TCP: connect-and-close floods, held (silent) connections, a [Watch]
//     that records when the server closes a connection;
//   - UDP: datagram floods and a [Hold] that records what a server sends to
//     a client that never answers;
//   - processes: liveness, open descriptors and the sockets a process
//     listens on, read from /proc (Linux only).
//
// Every function is bounded in count and time and meant for loopback
// addresses; none of it needs privileges.
package hostile
