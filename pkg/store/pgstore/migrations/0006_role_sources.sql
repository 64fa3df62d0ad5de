-- 0006: per-role source networks (tunnel admin roles add NAME --source
-- 10.0.0.0/8): the CIDRs a role counts from; an empty list means from
-- anywhere.
ALTER TABLE roles ADD COLUMN sources TEXT[] NOT NULL DEFAULT '{}';
