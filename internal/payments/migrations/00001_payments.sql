-- +goose Up
-- One row per ride's payment intent. status is where it has settled;
-- pending_* describe the one operation whose network call may be in flight
-- (recorded before the call, cleared when its result is recorded), so a
-- retry or the recovery worker can finish it after a crash.
CREATE TABLE payments (
    id              TEXT PRIMARY KEY,               -- UUIDv7
    ride_id         TEXT NOT NULL UNIQUE,           -- one payment per ride
    rider_id        TEXT NOT NULL,
    currency        TEXT NOT NULL,                  -- ISO 4217
    authorized      BIGINT NOT NULL,                -- minor units held (asked for, if declined)
    captured        BIGINT NOT NULL DEFAULT 0,
    refunded        BIGINT NOT NULL DEFAULT 0,
    status          TEXT NOT NULL,                  -- authorizing | authorized | declined | captured | voided | refunded
    payment_method  TEXT NOT NULL DEFAULT '',
    decline_reason  TEXT NOT NULL DEFAULT '',
    auth_ref        TEXT NOT NULL DEFAULT '',       -- the network's authorization reference
    pending_op      TEXT NOT NULL DEFAULT '',       -- authorize | capture | void | refund, or '' when none
    pending_request TEXT NOT NULL DEFAULT '',       -- idempotency_keys.id of that operation
    pending_amount  BIGINT NOT NULL DEFAULT 0,
    captured_at     BIGINT,                         -- unix microseconds
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    CHECK (authorized > 0 AND captured >= 0 AND captured <= authorized AND refunded >= 0 AND refunded <= captured)
);

-- Idempotency keys, scoped to (caller, operation). A row is written before
-- the network is called (response NULL, leased by locked_until) and gets the
-- response in the transaction that records the result.
CREATE TABLE idempotency_keys (
    id           TEXT PRIMARY KEY,                  -- UUIDv7; also names a refund
    scope        TEXT NOT NULL,                     -- the caller
    operation    TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    payment_id   TEXT NOT NULL,
    response     BYTEA,                             -- serialized rideshare.payments.v1.Payment; NULL while pending
    locked_until BIGINT NOT NULL,                   -- unix microseconds; a pending row leased until then
    created_at   BIGINT NOT NULL,
    UNIQUE (scope, operation, idem_key)
);
CREATE INDEX idempotency_keys_pending ON idempotency_keys (locked_until) WHERE response IS NULL;
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- The double-entry ledger: a transaction per movement of money, in one
-- currency, with balanced entries. See ledger.go for the accounts.
CREATE TABLE ledger_transactions (
    id          TEXT PRIMARY KEY,                   -- UUIDv7
    payment_id  TEXT NOT NULL REFERENCES payments (id),
    kind        TEXT NOT NULL,                      -- hold | release | capture | refund
    ref         TEXT NOT NULL,                      -- '' or, for a refund, its request id
    currency    TEXT NOT NULL,
    network_ref TEXT NOT NULL,                      -- the network's reference for the movement
    created_at  BIGINT NOT NULL,
    UNIQUE (payment_id, kind, ref)                  -- one hold, one release or capture, per payment
);
CREATE TABLE ledger_entries (
    transaction_id TEXT NOT NULL REFERENCES ledger_transactions (id),
    line           BIGINT NOT NULL,
    account        TEXT NOT NULL,
    debit          BIGINT NOT NULL,
    credit         BIGINT NOT NULL,
    PRIMARY KEY (transaction_id, line),
    CHECK ((debit > 0 AND credit = 0) OR (debit = 0 AND credit > 0))
);

-- The simulated card network's memory: what it answered per idempotency
-- key, as a real provider keeps it. It shares the payments database only
-- because it runs in the payments process; payments' own code never reads it.
CREATE TABLE cardnet_operations (
    network_key  TEXT PRIMARY KEY,
    operation    TEXT NOT NULL,                     -- authorize | capture | void | refund
    request_hash TEXT NOT NULL,
    auth_ref     TEXT NOT NULL,                     -- the authorization concerned (its own ref for authorize)
    ref          TEXT NOT NULL,
    currency     TEXT NOT NULL,
    amount       BIGINT NOT NULL,
    approved     BOOLEAN NOT NULL,
    reason       TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
-- A hold is settled once: captured or voided, never both, never twice.
CREATE UNIQUE INDEX cardnet_one_settlement ON cardnet_operations (auth_ref) WHERE operation IN ('capture', 'void');
CREATE INDEX cardnet_by_auth ON cardnet_operations (auth_ref);

-- +goose Down
DROP TABLE cardnet_operations;
DROP TABLE ledger_entries;
DROP TABLE ledger_transactions;
DROP TABLE idempotency_keys;
DROP TABLE payments;
