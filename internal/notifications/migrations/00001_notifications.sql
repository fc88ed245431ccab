-- +goose Up
-- The delivery log: one row per message to one user. Ids are UUIDv7, so
-- ordering by id is ordering by creation, and "after id" is a position a
-- reconnecting client resumes from.
CREATE TABLE notifications (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    ride_id     TEXT NOT NULL DEFAULT '',
    type        TEXT NOT NULL,
    ride_status BIGINT NOT NULL DEFAULT 0,  -- rides.v1.RideStatus
    at          BIGINT NOT NULL,            -- unix microseconds of the event
    message     TEXT NOT NULL
);
CREATE INDEX notifications_user_ride ON notifications (user_id, ride_id, id);
CREATE INDEX notifications_user ON notifications (user_id, id);

-- +goose Down
DROP TABLE notifications;
