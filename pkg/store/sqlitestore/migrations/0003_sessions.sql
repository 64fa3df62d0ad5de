-- 0003: bastion sessions and their recordings.
--
-- Same conventions as 0001 (times INTEGER unix microseconds UTC, NULL for a
-- zero optional time; blobs BLOB, BYTEA on PostgreSQL; booleans INTEGER).
-- Certificate revocation needs no schema change: issued_certs.revoked_at
-- is in 0001.

-- No foreign key to users or agents: a session is history, kept after its
-- user or agent is deleted.
CREATE TABLE sessions (
	id          TEXT PRIMARY KEY, -- random, URL-safe
	user_name   TEXT    NOT NULL,
	node        TEXT    NOT NULL,
	login       TEXT    NOT NULL,
	created_at  INTEGER NOT NULL,
	deadline    INTEGER NOT NULL,
	state       TEXT    NOT NULL CHECK (state IN ('active', 'expired', 'revoked', 'closed')),
	ended_at    INTEGER,          -- NULL while active
	end_reason  TEXT    NOT NULL DEFAULT '',
	bytes_in    INTEGER NOT NULL DEFAULT 0,
	bytes_out   INTEGER NOT NULL DEFAULT 0,
	source_ip   TEXT    NOT NULL DEFAULT '',
	cert_serial TEXT    NOT NULL DEFAULT '' -- lowercase hex; '' if none
);
CREATE INDEX sessions_user_name ON sessions (user_name);
CREATE INDEX sessions_node ON sessions (node);
CREATE INDEX sessions_state ON sessions (state);
CREATE INDEX sessions_created_at ON sessions (created_at); -- newest first

-- Sealed by the gateway before it gets here. At most one per session.
CREATE TABLE recordings (
	session_id TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
	data       BLOB    NOT NULL,
	size       INTEGER NOT NULL -- bytes of data
);
