-- 0004: just-in-time access requests (tunnel request create|approve|deny|
-- revoke), and the role fields they need: approve (the roles whose requests
-- the role's holders may decide) and sudo (the role's logins may use sudo
-- for the length of a session).
ALTER TABLE roles ADD COLUMN approve TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE roles ADD COLUMN sudo BOOLEAN NOT NULL DEFAULT false;

-- No foreign key to users or roles: a request is history, kept after its
-- user or role is deleted.
CREATE TABLE access_requests (
	id            TEXT COLLATE "C" PRIMARY KEY, -- random, URL-safe
	user_name     TEXT COLLATE "C" NOT NULL,
	role_name     TEXT COLLATE "C" NOT NULL,
	reason        TEXT        NOT NULL,
	duration      BIGINT      NOT NULL, -- nanoseconds asked for
	state         TEXT        NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'revoked')),
	created_at    TIMESTAMPTZ NOT NULL,
	pending_until TIMESTAMPTZ NOT NULL,
	decided_at    TIMESTAMPTZ,          -- NULL until decided
	decided_by    TEXT        NOT NULL DEFAULT '',
	comment       TEXT        NOT NULL DEFAULT '',
	starts_at     TIMESTAMPTZ,          -- the window, for an approved request
	ends_at       TIMESTAMPTZ,
	ended_at      TIMESTAMPTZ,          -- NULL until revoked or expired
	ended_by      TEXT        NOT NULL DEFAULT '',
	end_reason    TEXT        NOT NULL DEFAULT ''
);
CREATE INDEX access_requests_user_state ON access_requests (user_name, state);
CREATE INDEX access_requests_state ON access_requests (state);
CREATE INDEX access_requests_created_at ON access_requests (created_at);
