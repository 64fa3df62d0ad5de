-- 0002: agents, their join tokens, the stream policy, and what roles may
-- reach.
--
-- Same conventions as 0001 (times INTEGER unix microseconds UTC, booleans
-- INTEGER 0/1, lists of strings JSON arrays in TEXT). On PostgreSQL,
-- policy_rules.id is BIGINT GENERATED ALWAYS AS IDENTITY; AUTOINCREMENT here
-- gives the same guarantee that an ID is never reused, so that removing
-- rule N never removes a rule added after an earlier rule N was removed.

-- Roles created before this migration reach no node and no service.
ALTER TABLE roles ADD COLUMN nodes TEXT NOT NULL DEFAULT '[]'; -- JSON array, in the order given
ALTER TABLE roles ADD COLUMN services TEXT NOT NULL DEFAULT '[]'; -- JSON array, in the order given

-- Created by the first enrolment (join token), never before.
CREATE TABLE agents (
	name        TEXT PRIMARY KEY,
	locked      INTEGER NOT NULL DEFAULT 0 CHECK (locked IN (0, 1)),
	created_at  INTEGER NOT NULL, -- first enrolment
	enrolled_at INTEGER NOT NULL, -- latest enrolment
	last_seen   INTEGER           -- NULL if never connected
);

-- No foreign key to agents: the agent does not exist until its first
-- token is used.
CREATE TABLE join_tokens (
	hash       TEXT PRIMARY KEY, -- lowercase hex SHA-256 of the token
	agent      TEXT    NOT NULL,
	created_by TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	used_at    INTEGER -- NULL until used
);
CREATE INDEX join_tokens_agent ON join_tokens (agent);

CREATE TABLE policy_rules (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	effect     TEXT    NOT NULL CHECK (effect IN ('allow', 'deny')),
	from_agent TEXT    NOT NULL, -- agent name or '*'
	to_target  TEXT    NOT NULL, -- 'node/service', either part may be '*'
	created_by TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	UNIQUE (effect, from_agent, to_target)
);
