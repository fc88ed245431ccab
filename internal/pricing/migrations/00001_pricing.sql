-- +goose Up
-- How trips are priced, one rule per service area (a geo.Area name). Amounts
-- are minor units of currency. Loaded when the service starts.
CREATE TABLE fare_rules (
    area         TEXT PRIMARY KEY,
    currency     TEXT NOT NULL,     -- ISO 4217, e.g. USD
    base_fare    BIGINT NOT NULL,   -- once per trip
    per_km       BIGINT NOT NULL,   -- per kilometre of route, pro rata per metre
    per_minute   BIGINT NOT NULL,   -- per minute of route, pro rata per second
    minimum_fare BIGINT NOT NULL    -- least a trip costs, surge included
);
INSERT INTO fare_rules (area, currency, base_fare, per_km, per_minute, minimum_fare)
    VALUES ('san-francisco', 'USD', 250, 120, 30, 700);

-- The last supply and demand dispatch reported per zone
-- (dispatch.supply.changed); the surge multiplier is computed from it when
-- read, so a policy change applies at once and stale counts fade.
CREATE TABLE surge_zones (
    zone              TEXT PRIMARY KEY,  -- dispatch's opaque grid cell id
    available_drivers BIGINT NOT NULL,
    open_requests     BIGINT NOT NULL,
    observed_at       BIGINT NOT NULL    -- unix microseconds: the event's time
);

-- The random secret quote signing keys derive from when the
-- pricing.quote_key setting is not given. Kept here so quotes survive a
-- restart and every replica accepts the others' quotes.
CREATE TABLE quote_secrets (
    id         TEXT PRIMARY KEY,
    secret     BYTEA NOT NULL,
    created_at BIGINT NOT NULL      -- unix microseconds
);

-- +goose Down
DROP TABLE quote_secrets;
DROP TABLE surge_zones;
DROP TABLE fare_rules;
