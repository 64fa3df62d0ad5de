-- 0005: a certificate's subject names a user or an agent, which may share a
-- name; revocation filters on the kind so locking the user alice never
-- touches the agent alice. Existing rows are classified by what they are:
-- SSH host certificates are agents', SSH user certificates users', and X.509
-- certificates by their URI SAN (tunnel://CLUSTER/KIND/NAME).
ALTER TABLE issued_certs ADD COLUMN subject_kind TEXT NOT NULL DEFAULT '';
UPDATE issued_certs SET subject_kind = 'agent' WHERE kind = 'ssh-host';
UPDATE issued_certs SET subject_kind = 'user' WHERE kind = 'ssh-user';
UPDATE issued_certs SET subject_kind = 'agent' WHERE kind = 'x509' AND principals LIKE '%/agent/%';
UPDATE issued_certs SET subject_kind = 'user' WHERE kind = 'x509' AND principals LIKE '%/user/%';
CREATE INDEX issued_certs_subject_kind ON issued_certs (subject_kind, subject);
-- X.509 certificates without a URI SAN on record: by which table names the
-- subject, when only one does.
UPDATE issued_certs SET subject_kind = 'agent' WHERE subject_kind = '' AND kind = 'x509'
	AND subject IN (SELECT name FROM agents) AND subject NOT IN (SELECT name FROM users);
UPDATE issued_certs SET subject_kind = 'user' WHERE subject_kind = '' AND kind = 'x509'
	AND subject IN (SELECT name FROM users) AND subject NOT IN (SELECT name FROM agents);
