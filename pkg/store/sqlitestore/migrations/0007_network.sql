-- 0007: cluster-wide network allow/deny rules (tunnel admin network):
-- which source networks may reach the API, QUIC and jump host listeners.
-- AUTOINCREMENT, as for policy_rules: an ID is never reused.
CREATE TABLE network_rules (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	effect     TEXT    NOT NULL CHECK (effect IN ('allow', 'deny')),
	cidr       TEXT    NOT NULL, -- canonical prefix: 10.0.0.0/8, 2001:db8::/32
	listener   TEXT    NOT NULL CHECK (listener IN ('api', 'quic', 'ssh', 'all')),
	comment    TEXT    NOT NULL DEFAULT '',
	created_by TEXT    NOT NULL,
	created_at INTEGER NOT NULL, -- unix microseconds
	UNIQUE (effect, cidr, listener)
);
