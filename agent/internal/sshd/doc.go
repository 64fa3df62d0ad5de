// Package sshd is the SSH endpoint each agent runs for its VM.
//
// The agent never listens for SSH on the network: the gateway carries each
// SSH connection to the agent as a QUIC stream, and the agent hands that
// stream to [Server.ServeConn]. Any net.Conn works, so tests use
// [Server.Serve] on a loopback listener and the real OpenSSH client.
//
// Who may log in is decided by certificates only:
//
//   - the client's key must be an OpenSSH user certificate signed by one of
//     [Config.UserCAs], valid now by [Config.Clock], not revoked, naming the
//     requested login among its (non-empty) principals, with a key id of the
//     form "user=NAME serial=HEX session=ID";
//   - only once the client has proved it holds that key (signed with it) is
//     the session looked up with [Config.LookupSession]; its error message
//     is shown to the user as an authentication banner;
//   - channels derive their identity again from the key the connection
//     authenticated with, never from the last key the client merely offered
//     (the CVE-2024-45337 class of bugs).
//
// The host presents its host certificate ([Config.HostSigner]); clients
// trust the host CA, never the key on first use.
//
// A connection ends at the session deadline (never later than the
// certificate's valid-before), after [Session.IdleTimeout] without traffic,
// when [Server.EndSession] revokes the session, or when [Server.Close] shuts
// the server down. Each of these cancels the connection's context with a
// cause, and the cause's message is written to every channel's stderr
// before the connection closes, so the user sees why.
//
// Sessions run the login's shell with a PTY, exec commands (so scp works),
// and serve the sftp subsystem; port and agent forwarding only when the
// session allows them; X11 never. PTY and exec sessions are recorded through
// [Config.Record]; [NewAsciicast] writes the asciicast v2 format.
package sshd
