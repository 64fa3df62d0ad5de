-- 0001: the initial gateway state.
--
-- Written to run unchanged in spirit on PostgreSQL: times are INTEGER unix
-- microseconds UTC, durations INTEGER nanoseconds, booleans INTEGER 0/1
-- (BOOLEAN there), blobs BLOB (BYTEA there), lists of strings JSON arrays in
-- TEXT columns. Column names avoid words PostgreSQL reserves ("user").

CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);

CREATE TABLE ca_keys (
	id             INTEGER PRIMARY KEY,
	kind           TEXT    NOT NULL,
	public         BLOB    NOT NULL,
	sealed_private BLOB    NOT NULL,
	created_at     INTEGER NOT NULL,
	active         INTEGER NOT NULL CHECK (active IN (0, 1))
);

CREATE TABLE roles (
	name       TEXT PRIMARY KEY,
	logins     TEXT    NOT NULL, -- JSON array, in the order given
	max_ttl    INTEGER NOT NULL, -- nanoseconds; 0 means the cluster maximum
	admin      INTEGER NOT NULL CHECK (admin IN (0, 1)),
	created_at INTEGER NOT NULL
);

CREATE TABLE users (
	name           TEXT PRIMARY KEY,
	password_hash  TEXT    NOT NULL,
	totp_secret    BLOB,
	totp_last_step INTEGER NOT NULL DEFAULT 0,
	locked         INTEGER NOT NULL DEFAULT 0 CHECK (locked IN (0, 1)),
	created_at     INTEGER NOT NULL
);

CREATE TABLE user_roles (
	user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
	role_name TEXT NOT NULL REFERENCES roles (name) ON DELETE RESTRICT,
	PRIMARY KEY (user_name, role_name)
);
CREATE INDEX user_roles_role ON user_roles (role_name);

-- Kept per canonical name whether or not such a user exists, so no foreign key.
CREATE TABLE login_failures (
	name         TEXT PRIMARY KEY,
	count        INTEGER NOT NULL,
	locked_until INTEGER -- NULL when not locked out
);

CREATE TABLE issued_certs (
	kind       TEXT    NOT NULL,
	serial     TEXT    NOT NULL, -- lowercase hex
	subject    TEXT    NOT NULL,
	principals TEXT    NOT NULL, -- JSON array, in the order given
	not_before INTEGER NOT NULL,
	not_after  INTEGER NOT NULL,
	issued_at  INTEGER NOT NULL,
	revoked_at INTEGER, -- NULL unless revoked
	PRIMARY KEY (kind, serial)
);
CREATE INDEX issued_certs_subject ON issued_certs (subject);
CREATE INDEX issued_certs_not_after ON issued_certs (not_after);

CREATE TABLE audit_events (
	seq       INTEGER PRIMARY KEY,
	time      INTEGER NOT NULL,
	type      TEXT    NOT NULL,
	actor     TEXT    NOT NULL,
	subject   TEXT    NOT NULL,
	outcome   TEXT    NOT NULL,
	reason    TEXT    NOT NULL,
	source_ip TEXT    NOT NULL,
	details   TEXT, -- JSON object; NULL when there are none
	prev_hash TEXT    NOT NULL,
	hash      TEXT    NOT NULL
);

-- The last event appended, recorded apart from the events so that deleting
-- events from the end of the log is detected. Always exactly one row.
CREATE TABLE audit_head (
	id   INTEGER PRIMARY KEY CHECK (id = 1),
	seq  INTEGER NOT NULL,
	hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');
