-- +goose Up
CREATE TABLE profiles (
    user_id       TEXT PRIMARY KEY,   -- the identity account id
    role          TEXT NOT NULL,      -- rider | driver
    name          TEXT NOT NULL,
    email         TEXT NOT NULL,
    vehicle_make  TEXT NOT NULL DEFAULT '',
    vehicle_model TEXT NOT NULL DEFAULT '',
    vehicle_plate TEXT NOT NULL DEFAULT '',
    vehicle_color TEXT NOT NULL DEFAULT '',
    rating_sum    BIGINT NOT NULL DEFAULT 0,  -- sum of stars received
    rating_count  BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL             -- unix microseconds
);

-- +goose Down
DROP TABLE profiles;
