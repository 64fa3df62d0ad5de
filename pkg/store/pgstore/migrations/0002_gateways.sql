-- 0002: the gateways of the cluster, as each advertises itself in its
-- heartbeat (every 10 s by default); a clean shutdown removes its row.
CREATE TABLE gateways (
	id           TEXT COLLATE "C" PRIMARY KEY,
	api_addr     TEXT        NOT NULL,
	quic_addr    TEXT        NOT NULL,
	ssh_addr     TEXT        NOT NULL,
	version      TEXT        NOT NULL,
	started_at   TIMESTAMPTZ NOT NULL,
	heartbeat_at TIMESTAMPTZ NOT NULL,
	alive_for    BIGINT      NOT NULL -- nanoseconds a heartbeat vouches for the gateway
);
