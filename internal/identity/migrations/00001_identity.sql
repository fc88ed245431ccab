-- +goose Up
-- Everyone who can sign in. The email is stored lower-cased, so the unique
-- constraint is what makes "one account per address" true under races.
CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,   -- UUID; the access token's sub
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,      -- argon2id, PHC string format
    role          TEXT NOT NULL,      -- rider | driver | admin
    name          TEXT NOT NULL,
    created_at    BIGINT NOT NULL     -- unix microseconds
);

-- OAuth clients. Seeded at start from configuration; list values are
-- space-separated, as OAuth itself writes them.
CREATE TABLE clients (
    id            TEXT PRIMARY KEY,
    secret_hash   TEXT NOT NULL DEFAULT '',  -- argon2id; '' for a public client
    grant_types   TEXT NOT NULL,
    redirect_uris TEXT NOT NULL DEFAULT '',
    role          TEXT NOT NULL DEFAULT '',  -- role of the client's own tokens (client_credentials)
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- Token signing keys. The highest generation signs; every row is published
-- in the JWKS. generation is unique so that replicas starting together agree
-- on one key (the first insert wins), and so that rotation later is "insert
-- generation n+1".
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,      -- RFC 7638 thumbprint of the public key
    generation  BIGINT NOT NULL UNIQUE,
    algorithm   TEXT NOT NULL,         -- ES256
    private_key TEXT NOT NULL,         -- PKCS #8, PEM
    created_at  BIGINT NOT NULL
);

-- Refresh tokens, stored by hash only. A token is rotated on every use; the
-- used one is kept (rotated_at set) until it expires so that a replay is
-- recognised and revokes the whole family (OAuth 2.1, section 4.3.1).
CREATE TABLE refresh_tokens (
    id         TEXT PRIMARY KEY,   -- hex SHA-256 of the token
    family_id  TEXT NOT NULL,      -- shared by every rotation of one sign-in
    client_id  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    audience   TEXT NOT NULL,
    amr        TEXT NOT NULL,
    auth_time  BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    rotated_at BIGINT              -- NULL while the token is the live one
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_subject ON refresh_tokens (subject, client_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

-- Authorization requests of the authorization code flow, from /authorize
-- until the code is exchanged (or the request expires).
CREATE TABLE auth_requests (
    id                    TEXT PRIMARY KEY,
    client_id             TEXT NOT NULL,
    redirect_uri          TEXT NOT NULL,
    state                 TEXT NOT NULL,
    nonce                 TEXT NOT NULL,
    scopes                TEXT NOT NULL,
    response_type         TEXT NOT NULL,
    response_mode         TEXT NOT NULL,
    code_challenge        TEXT NOT NULL,
    code_challenge_method TEXT NOT NULL,
    subject               TEXT NOT NULL DEFAULT '',  -- set once the user signed in
    auth_time             BIGINT NOT NULL DEFAULT 0,
    done                  BOOLEAN NOT NULL DEFAULT FALSE,
    code_hash             TEXT UNIQUE,               -- hex SHA-256 of the issued code
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL
);
CREATE INDEX auth_requests_expiry ON auth_requests (expires_at);

-- Access tokens are self-contained JWTs; revoking one records its id here
-- until it would have expired anyway.
CREATE TABLE revoked_tokens (
    token_id   TEXT PRIMARY KEY,   -- the token's jti
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);

-- +goose Down
DROP TABLE revoked_tokens;
DROP TABLE auth_requests;
DROP TABLE refresh_tokens;
DROP TABLE signing_keys;
DROP TABLE clients;
DROP TABLE accounts;
