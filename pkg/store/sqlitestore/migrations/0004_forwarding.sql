-- 0004: roles may allow SSH port and agent forwarding in their sessions
-- (off unless a role allows it). BOOLEAN on PostgreSQL.
ALTER TABLE roles ADD COLUMN port_forwarding INTEGER NOT NULL DEFAULT 0 CHECK (port_forwarding IN (0, 1));
ALTER TABLE roles ADD COLUMN agent_forwarding INTEGER NOT NULL DEFAULT 0 CHECK (agent_forwarding IN (0, 1));
