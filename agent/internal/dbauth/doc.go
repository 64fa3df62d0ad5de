// Package dbauth logs in to a database for an application that holds no
// credential: the application connects with any user name and no password;
// the agent takes its startup, logs in to the real server with the
// short-lived credential the gateway leased from Vault for the stream, and
// gives back the server connection, authenticated, to pass the session
// through (docs/DBCREDS.md).
//
// PostgreSQL (postgres.go) is spoken with jackc/pgx: pgproto3 decodes the
// application's startup and encodes the messages sent to it, and pgconn
// logs in to the server (TLS where the server offers it, SCRAM-SHA-256 or
// whatever the server asks) and hands over the raw connection (Hijack).
//
// MySQL and MariaDB (mysql.go) are spoken with Vitess's go/mysql: its
// server side greets the application and takes its handshake response,
// its client side logs in to the server with the capabilities the
// application chose, and hands over the raw connection (GetRawConn).
//
// Use Postgres.Serve or MySQL.Serve on the application's stream, then pass
// the bytes through. No parser here is hand-written.
package dbauth
