-- 0008: just-in-time access requests (tunnel request create|approve|deny|
-- revoke), and the role fields they need: approve (the roles whose requests
-- the role's holders may decide, a JSON list like logins) and sudo (the
-- role's logins may use sudo for the length of a session).
--
-- Same conventions as 0001 (times INTEGER unix microseconds UTC, NULL for a
-- zero optional time; booleans INTEGER; lists JSON arrays).
ALTER TABLE roles ADD COLUMN approve TEXT NOT NULL DEFAULT '[]';
ALTER TABLE roles ADD COLUMN sudo INTEGER NOT NULL DEFAULT 0 CHECK (sudo IN (0, 1));

-- No foreign key to users or roles: a request is history, kept after its
-- user or role is deleted (the access home ignores a grant of a role that
-- no longer exists).
CREATE TABLE access_requests (
	id            TEXT PRIMARY KEY, -- random, URL-safe
	user_name     TEXT    NOT NULL,
	role_name     TEXT    NOT NULL,
	reason        TEXT    NOT NULL,
	duration      INTEGER NOT NULL, -- nanoseconds asked for
	state         TEXT    NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'revoked')),
	created_at    INTEGER NOT NULL,
	pending_until INTEGER NOT NULL,
	decided_at    INTEGER,          -- NULL until decided
	decided_by    TEXT    NOT NULL DEFAULT '',
	comment       TEXT    NOT NULL DEFAULT '',
	starts_at     INTEGER,          -- the window, for an approved request
	ends_at       INTEGER,
	ended_at      INTEGER,          -- NULL until revoked or expired
	ended_by      TEXT    NOT NULL DEFAULT '',
	end_reason    TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX access_requests_user_state ON access_requests (user_name, state);
CREATE INDEX access_requests_state ON access_requests (state);
CREATE INDEX access_requests_created_at ON access_requests (created_at);
