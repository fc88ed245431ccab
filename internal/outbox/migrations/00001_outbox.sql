-- +goose Up
-- Events waiting for (or done with) the relay. A row is written in the same
-- transaction as the state change it announces; sent_at is set once the
-- broker has acknowledged it.
CREATE TABLE outbox (
    id         TEXT PRIMARY KEY,  -- event id, a UUIDv7 (time-ordered); the Nats-Msg-Id
    subject    TEXT NOT NULL,     -- NATS subject, equal to the event type
    envelope   BYTEA NOT NULL,    -- serialized rideshare.events.v1.Envelope
    created_at BIGINT NOT NULL,   -- unix microseconds
    sent_at    BIGINT             -- unix microseconds; NULL while unsent
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- Events this service's consumers have applied. The row is inserted in the
-- same transaction as the event's effect, so a redelivery finds it and
-- applies nothing, however long after the broker forgot the message id.
CREATE TABLE processed_events (
    consumer   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- +goose Down
DROP TABLE processed_events;
DROP TABLE outbox;
