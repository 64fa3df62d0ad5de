-- 0001: the whole gateway state, as sqlitestore has it after its migration
-- 0005, in PostgreSQL's own types:
--
--   - times are TIMESTAMPTZ (microseconds, what audit.Normalize keeps), NULL
--     for a zero optional time;
--   - durations are BIGINT nanoseconds (roles.max_ttl);
--   - booleans BOOLEAN, blobs BYTEA;
--   - lists of strings TEXT[] in the order given, '{}' when empty;
--   - audit details JSONB, NULL when there are none;
--   - names, serials and IDs are TEXT COLLATE "C", so that every listing is
--     in byte order (what SQLite and Go's sort give) whatever the database's
--     default collation, and the primary key indexes serve ORDER BY.
--
-- Column names avoid words PostgreSQL reserves ("user").

CREATE TABLE meta (
	key   TEXT COLLATE "C" PRIMARY KEY,
	value TEXT NOT NULL
);

CREATE TABLE ca_keys (
	id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	kind           TEXT        NOT NULL,
	public         BYTEA       NOT NULL,
	sealed_private BYTEA       NOT NULL,
	created_at     TIMESTAMPTZ NOT NULL,
	active         BOOLEAN     NOT NULL
);

CREATE TABLE roles (
	name             TEXT COLLATE "C" PRIMARY KEY,
	logins           TEXT[]      NOT NULL DEFAULT '{}', -- in the order given
	max_ttl          BIGINT      NOT NULL,              -- nanoseconds; 0 means the cluster maximum
	admin            BOOLEAN     NOT NULL,
	nodes            TEXT[]      NOT NULL DEFAULT '{}', -- node patterns, in the order given
	services         TEXT[]      NOT NULL DEFAULT '{}', -- node/service patterns, in the order given
	port_forwarding  BOOLEAN     NOT NULL DEFAULT false,
	agent_forwarding BOOLEAN     NOT NULL DEFAULT false,
	created_at       TIMESTAMPTZ NOT NULL
);

CREATE TABLE users (
	name           TEXT COLLATE "C" PRIMARY KEY,
	password_hash  TEXT        NOT NULL,
	totp_secret    BYTEA,
	totp_last_step BIGINT      NOT NULL DEFAULT 0,
	locked         BOOLEAN     NOT NULL DEFAULT false,
	created_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE user_roles (
	user_name TEXT COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
	role_name TEXT COLLATE "C" NOT NULL REFERENCES roles (name) ON DELETE RESTRICT,
	PRIMARY KEY (user_name, role_name)
);
CREATE INDEX user_roles_role ON user_roles (role_name);

-- Kept per canonical name whether or not such a user exists, so no foreign
-- key. ReserveLoginAttempt locks the row (SELECT ... FOR UPDATE).
CREATE TABLE login_failures (
	name         TEXT COLLATE "C" PRIMARY KEY,
	count        INTEGER NOT NULL,
	locked_until TIMESTAMPTZ -- NULL when not locked out
);

CREATE TABLE issued_certs (
	kind         TEXT COLLATE "C" NOT NULL,
	serial       TEXT COLLATE "C" NOT NULL, -- lowercase hex
	subject      TEXT COLLATE "C" NOT NULL,
	subject_kind TEXT        NOT NULL CHECK (subject_kind IN ('user', 'agent')),
	principals   TEXT[]      NOT NULL DEFAULT '{}', -- in the order given
	not_before   TIMESTAMPTZ NOT NULL,
	not_after    TIMESTAMPTZ NOT NULL,
	issued_at    TIMESTAMPTZ NOT NULL,
	revoked_at   TIMESTAMPTZ, -- NULL unless revoked
	PRIMARY KEY (kind, serial)
);
CREATE INDEX issued_certs_subject ON issued_certs (subject_kind, subject);
-- The deny list (RevokedCertificates) reads only revoked certificates.
CREATE INDEX issued_certs_revoked ON issued_certs (not_after) WHERE revoked_at IS NOT NULL;

CREATE TABLE audit_events (
	seq       BIGINT PRIMARY KEY,
	time      TIMESTAMPTZ NOT NULL,
	type      TEXT        NOT NULL,
	actor     TEXT        NOT NULL,
	subject   TEXT        NOT NULL,
	outcome   TEXT        NOT NULL,
	reason    TEXT        NOT NULL,
	source_ip TEXT        NOT NULL,
	details   JSONB, -- object of strings; NULL when there are none
	prev_hash TEXT        NOT NULL,
	hash      TEXT        NOT NULL
);

-- The last event appended, recorded apart from the events so that deleting
-- events from the end of the log is detected. Always exactly one row. Every
-- transaction that appends events locks it first (SELECT ... FOR UPDATE):
-- that row lock is what keeps one chain when several gateways append at
-- once.
CREATE TABLE audit_head (
	id   INTEGER PRIMARY KEY CHECK (id = 1),
	seq  BIGINT NOT NULL,
	hash TEXT   NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');

-- Created by the first enrolment (join token), never before.
CREATE TABLE agents (
	name        TEXT COLLATE "C" PRIMARY KEY,
	locked      BOOLEAN     NOT NULL DEFAULT false,
	created_at  TIMESTAMPTZ NOT NULL, -- first enrolment
	enrolled_at TIMESTAMPTZ NOT NULL, -- latest enrolment
	last_seen   TIMESTAMPTZ           -- NULL if never connected
);

-- No foreign key to agents: the agent does not exist until its first token
-- is used.
CREATE TABLE join_tokens (
	hash       TEXT COLLATE "C" PRIMARY KEY, -- lowercase hex SHA-256 of the token
	agent      TEXT COLLATE "C" NOT NULL,
	created_by TEXT        NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	expires_at TIMESTAMPTZ NOT NULL,
	used_at    TIMESTAMPTZ -- NULL until used
);
CREATE INDEX join_tokens_agent ON join_tokens (agent);

-- An identity column never hands out a value twice, so removing rule N never
-- removes a rule added after an earlier rule N was removed.
CREATE TABLE policy_rules (
	id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	effect     TEXT        NOT NULL CHECK (effect IN ('allow', 'deny')),
	from_agent TEXT        NOT NULL, -- agent name or '*'
	to_target  TEXT        NOT NULL, -- 'node/service', either part may be '*'
	created_by TEXT        NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	UNIQUE (effect, from_agent, to_target)
);

-- No foreign key to users or agents: a session is history, kept after its
-- user or agent is deleted.
CREATE TABLE sessions (
	id          TEXT COLLATE "C" PRIMARY KEY, -- random, URL-safe
	user_name   TEXT COLLATE "C" NOT NULL,
	node        TEXT COLLATE "C" NOT NULL,
	login       TEXT        NOT NULL,
	created_at  TIMESTAMPTZ NOT NULL,
	deadline    TIMESTAMPTZ NOT NULL,
	state       TEXT        NOT NULL CHECK (state IN ('active', 'expired', 'revoked', 'closed')),
	ended_at    TIMESTAMPTZ,          -- NULL while active
	end_reason  TEXT        NOT NULL DEFAULT '',
	bytes_in    BIGINT      NOT NULL DEFAULT 0,
	bytes_out   BIGINT      NOT NULL DEFAULT 0,
	source_ip   TEXT        NOT NULL DEFAULT '',
	cert_serial TEXT        NOT NULL DEFAULT '' -- lowercase hex; '' if none
);
CREATE INDEX sessions_user_name ON sessions (user_name);
CREATE INDEX sessions_node ON sessions (node);
CREATE INDEX sessions_active ON sessions (deadline) WHERE state = 'active';
CREATE INDEX sessions_created_at ON sessions (created_at DESC, id DESC); -- newest first

-- Sealed by the gateway before it gets here. At most one per session.
CREATE TABLE recordings (
	session_id TEXT COLLATE "C" PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
	data       BYTEA  NOT NULL,
	size       BIGINT NOT NULL -- bytes of data
);
