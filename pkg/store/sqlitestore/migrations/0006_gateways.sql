-- 0006: the gateways of the cluster, as each advertises itself in its
-- heartbeat (every 10 s by default); a clean shutdown removes its row.
CREATE TABLE gateways (
	id           TEXT PRIMARY KEY,
	api_addr     TEXT NOT NULL,
	quic_addr    TEXT NOT NULL,
	ssh_addr     TEXT NOT NULL,
	version      TEXT NOT NULL,
	started_at   INTEGER NOT NULL, -- unix microseconds
	heartbeat_at INTEGER NOT NULL, -- unix microseconds
	alive_for    INTEGER NOT NULL  -- nanoseconds a heartbeat vouches for the gateway
);
