-- +goose Up
-- One rating per ride and rater; the rated user's profile keeps the running
-- sum and count, updated in the same transaction as the insert.
CREATE TABLE ratings (
    ride_id    TEXT NOT NULL,
    rater_id   TEXT NOT NULL,
    user_id    TEXT NOT NULL,   -- who was rated
    stars      BIGINT NOT NULL, -- 1 to 5
    created_at BIGINT NOT NULL, -- unix microseconds
    PRIMARY KEY (ride_id, rater_id)
);

-- +goose Down
DROP TABLE ratings;
