-- 0003: cluster-wide network allow/deny rules (tunnel admin network):
-- which source networks may reach the API, QUIC and jump host listeners.
CREATE TABLE network_rules (
	id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	effect     TEXT        NOT NULL CHECK (effect IN ('allow', 'deny')),
	cidr       TEXT        COLLATE "C" NOT NULL, -- canonical prefix: 10.0.0.0/8, 2001:db8::/32
	listener   TEXT        NOT NULL CHECK (listener IN ('api', 'quic', 'ssh', 'all')),
	comment    TEXT        NOT NULL DEFAULT '',
	created_by TEXT        NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	UNIQUE (effect, cidr, listener)
);
