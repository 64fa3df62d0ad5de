-- 0005: cluster-wide periodic jobs (scheduled backups): the last time one
-- gateway claimed each, so that of several gateways given the same
-- schedule only one runs it per period.
CREATE TABLE jobs (
	name     TEXT COLLATE "C" PRIMARY KEY,
	owner    TEXT        NOT NULL, -- the gateway id that claimed the last run
	last_run TIMESTAMPTZ NOT NULL
);
