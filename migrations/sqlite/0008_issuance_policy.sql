-- Issuance policy (issue 11): what an enrollment token may buy, the lineage and requester of
-- every issued certificate, and who created an identity (to limit self-service tokens).
ALTER TABLE enroll_tokens ADD COLUMN grant_json TEXT;           -- JSON of ca::Grant; NULL: CN=name only
ALTER TABLE issued ADD COLUMN predecessor TEXT;                 -- serial of the certificate this one renews
ALTER TABLE issued ADD COLUMN actor TEXT NOT NULL DEFAULT '';   -- who asked: token:…, cert:…, cli:…
CREATE INDEX issued_predecessor ON issued (predecessor);
CREATE INDEX issued_fingerprint ON issued (fingerprint);
ALTER TABLE identities ADD COLUMN created_by TEXT;              -- actor that created it
