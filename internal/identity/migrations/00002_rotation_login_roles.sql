-- +goose Up
-- Key rotation: a key is published as soon as it is stored but signs only
-- from activates_at, so verifiers that cache the JWKS have fetched it before
-- the first token it signs reaches them. Every replica reads the same rows
-- and so switches at the same moment. Existing keys have always been active.
ALTER TABLE signing_keys ADD COLUMN activates_at BIGINT NOT NULL DEFAULT 0;
UPDATE signing_keys SET activates_at = created_at;

-- The browser sign-in: csrf_hash binds the login form to this request and
-- to the browser that loaded it (the token is also its cookie). A redeemed
-- request is kept, not deleted, so that a second use of its code is
-- recognised and revokes what the first use issued (family_id: the refresh
-- tokens; access_token_id: the access token's jti).
ALTER TABLE auth_requests ADD COLUMN csrf_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE auth_requests ADD COLUMN redeemed_at BIGINT;
ALTER TABLE auth_requests ADD COLUMN family_id TEXT NOT NULL DEFAULT '';
ALTER TABLE auth_requests ADD COLUMN access_token_id TEXT NOT NULL DEFAULT '';

-- Roles: role is the one a token carries; signup_role is the rider or
-- driver the account signed up as, which it returns to when admin is
-- revoked.
ALTER TABLE accounts ADD COLUMN signup_role TEXT NOT NULL DEFAULT '';
UPDATE accounts SET signup_role = role WHERE role <> 'admin';

-- +goose Down
ALTER TABLE accounts DROP COLUMN signup_role;
ALTER TABLE auth_requests DROP COLUMN access_token_id;
ALTER TABLE auth_requests DROP COLUMN family_id;
ALTER TABLE auth_requests DROP COLUMN redeemed_at;
ALTER TABLE auth_requests DROP COLUMN csrf_hash;
ALTER TABLE signing_keys DROP COLUMN activates_at;
