-- +goose Up
-- One row per ride: the aggregate (status, parties, fare, payment) and its
-- saga state (the steps still to run), so that a state change and the saga's
-- next step are always written in the same transaction.
CREATE TABLE rides (
    id               TEXT PRIMARY KEY,          -- UUIDv7
    rider_id         TEXT NOT NULL,
    driver_id        TEXT NOT NULL DEFAULT '',  -- assigned driver; '' while none
    status           TEXT NOT NULL,             -- requested | searching | ... (public spelling)
    reason           TEXT NOT NULL DEFAULT '',  -- why it failed or was cancelled
    pickup           TEXT NOT NULL,             -- "lat,lng", exact decimal text of the float64s
    dropoff          TEXT NOT NULL,
    quote_id         TEXT NOT NULL DEFAULT '',  -- the rider's quote, redeemed by the quote step
    payment_method   TEXT NOT NULL DEFAULT '',
    fare_amount      BIGINT NOT NULL DEFAULT 0, -- minor units; 0 until quoted
    fare_currency    TEXT NOT NULL DEFAULT '',  -- ISO 4217; '' until quoted
    payment_id       TEXT NOT NULL DEFAULT '',  -- the hold at payments; '' while none
    search_attempt   BIGINT NOT NULL DEFAULT 0, -- dispatch StartSearch attempt; 0 before the first
    excluded_drivers TEXT NOT NULL DEFAULT '[]',-- JSON array of drivers who gave the ride up
    search_deadline  BIGINT NOT NULL DEFAULT 0, -- unix microseconds
    assigned_at      BIGINT NOT NULL DEFAULT 0, -- unix microseconds; the cancellation grace starts here
    charge_amount    BIGINT NOT NULL DEFAULT 0, -- what is to be (or was) captured: fare or fee
    captured_at      BIGINT NOT NULL DEFAULT 0, -- unix microseconds; 0 until the capture is recorded
    steps            TEXT NOT NULL DEFAULT '',  -- saga steps still to run, comma-separated; '' when done
    due_at           BIGINT NOT NULL DEFAULT 0, -- when the first step may run next
    step_tries       BIGINT NOT NULL DEFAULT 0, -- times the first step was started
    last_error       TEXT NOT NULL DEFAULT '',  -- the first step's last failure
    leased_until     BIGINT NOT NULL DEFAULT 0, -- a worker runs the first step until then
    version          BIGINT NOT NULL DEFAULT 0, -- optimistic concurrency between writers
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX rides_rider ON rides (rider_id, created_at, id);
CREATE INDEX rides_driver ON rides (driver_id, created_at, id);
CREATE INDEX rides_created ON rides (created_at, id);
CREATE INDEX rides_status ON rides (status);
-- The saga worker's queue: only rides with steps left are indexed.
CREATE INDEX rides_due ON rides (due_at) WHERE steps <> '';

-- Idempotency-Key records of RequestRide (Stripe's rules), scoped per caller.
CREATE TABLE ride_requests (
    caller_id    TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    request_hash TEXT NOT NULL,             -- SHA-256 of the request body
    state        TEXT NOT NULL,             -- in_flight | done
    ride_id      TEXT NOT NULL DEFAULT '',
    response     BYTEA,                     -- the first response, serialized
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (caller_id, idem_key)
);
CREATE INDEX ride_requests_created ON ride_requests (created_at);

-- +goose Down
DROP TABLE ride_requests;
DROP TABLE rides;
