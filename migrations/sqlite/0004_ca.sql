-- Certificates issued by the built-in CA, and single-use enrollment tokens.
CREATE TABLE issued (
    serial       TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    subject      TEXT NOT NULL,
    sans         TEXT NOT NULL,       -- comma-separated
    profile      TEXT NOT NULL,
    not_after    TEXT NOT NULL,
    issued_at    TEXT NOT NULL,
    via          TEXT NOT NULL        -- sign, issue, enroll, renew
);

CREATE TABLE enroll_tokens (
    token_sha256  TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    profile       TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       TEXT
);
