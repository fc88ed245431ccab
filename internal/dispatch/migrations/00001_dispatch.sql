-- +goose Up
-- Drivers' availability, and their last known position written lazily (at
-- most every few seconds, off the request path): enough to resume matching
-- after a restart until the next pings arrive. Coordinates are microdegrees
-- (about 0.1 m), since both engines share only integer types.
CREATE TABLE drivers (
    driver_id  TEXT PRIMARY KEY,
    online     BOOLEAN NOT NULL,
    online_at  BIGINT NOT NULL,           -- when online last changed, unix µs
    lat_e6     BIGINT NOT NULL DEFAULT 0,
    lng_e6     BIGINT NOT NULL DEFAULT 0,
    located_at BIGINT NOT NULL DEFAULT 0, -- recorded_at of the position, unix µs; 0 = none
    updated_at BIGINT NOT NULL            -- any change; replicas reload rows changed since they last looked
);
CREATE INDEX drivers_updated ON drivers (updated_at);

-- One search per (ride, attempt): the StartSearch idempotency key. Its due
-- times (deadline, retry_at) are the durable timers the timer worker scans.
CREATE TABLE searches (
    ride_id        TEXT NOT NULL,
    attempt        BIGINT NOT NULL,
    rider_id       TEXT NOT NULL,
    pickup_lat_e6  BIGINT NOT NULL,
    pickup_lng_e6  BIGINT NOT NULL,
    dropoff_lat_e6 BIGINT NOT NULL,
    dropoff_lng_e6 BIGINT NOT NULL,
    zone           TEXT NOT NULL,             -- supply zone of the pickup
    fare_amount    BIGINT NOT NULL,
    fare_currency  TEXT NOT NULL,
    exclude        TEXT NOT NULL,             -- JSON array of driver ids never to offer it to
    deadline       BIGINT NOT NULL,           -- unix µs: SearchFailed when reached unassigned
    retry_at       BIGINT NOT NULL DEFAULT 0, -- unix µs: look for a free driver again; 0 = not waiting
    status         TEXT NOT NULL,             -- searching | assigned | released | failed | cancelled | superseded
    driver_id      TEXT NOT NULL DEFAULT '',  -- the driver who accepted
    eta_seconds    BIGINT NOT NULL DEFAULT 0,
    version        BIGINT NOT NULL DEFAULT 0, -- bumped to lock the row before changing the search
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (ride_id, attempt)
);
CREATE INDEX searches_deadline ON searches (deadline) WHERE status = 'searching';
CREATE INDEX searches_retry ON searches (retry_at) WHERE status = 'searching' AND retry_at > 0;
CREATE INDEX searches_zone ON searches (zone) WHERE status = 'searching';

-- Offers of a search's ride to drivers, one driver at a time. A driver gets
-- at most one offer per attempt.
CREATE TABLE offers (
    ride_id      TEXT NOT NULL,
    attempt      BIGINT NOT NULL,
    driver_id    TEXT NOT NULL,
    status       TEXT NOT NULL,             -- open | accepted | declined | expired | withdrawn
    expires_at   BIGINT NOT NULL,           -- unix µs: the durable offer timer
    created_at   BIGINT NOT NULL,
    responded_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (ride_id, attempt, driver_id)
);
-- A ride is offered to one driver at a time.
CREATE UNIQUE INDEX offers_one_open_per_ride ON offers (ride_id) WHERE status = 'open';
CREATE INDEX offers_expiry ON offers (expires_at) WHERE status = 'open';
CREATE INDEX offers_driver ON offers (driver_id, status);

-- The semantic lock: a driver with an open offer or an assigned ride has a
-- row here, and the primary key makes a second one impossible, so no driver
-- is offered or booked two rides at once, whatever runs concurrently.
CREATE TABLE driver_locks (
    driver_id  TEXT PRIMARY KEY,
    ride_id    TEXT NOT NULL,
    attempt    BIGINT NOT NULL,
    kind       TEXT NOT NULL,   -- offered | assigned
    created_at BIGINT NOT NULL
);
CREATE INDEX driver_locks_ride ON driver_locks (ride_id);

-- +goose Down
DROP TABLE driver_locks;
DROP TABLE offers;
DROP TABLE searches;
DROP TABLE drivers;
