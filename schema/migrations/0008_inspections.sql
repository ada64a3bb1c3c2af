-- Field inspections: an officer or the collateral manager counts a lot's goods on site. The count
-- outranks every sensor: the lending engine compares the latest count of each lot with what the
-- sensors said when it was made (`sensor_quantity`, NULL when they said nothing then) and now.
-- depends: 0007_pledge_normalised

CREATE TABLE inspections (
    id               bigserial PRIMARY KEY,
    lot_id           text NOT NULL REFERENCES lots (lot_id) ON DELETE CASCADE,
    facility_id      text NOT NULL REFERENCES facilities (facility_id),
    counted_quantity double precision NOT NULL
                     CHECK (counted_quantity >= 0 AND counted_quantity <= 1e12),
    counted_at       timestamptz NOT NULL,
    counted_by       text NOT NULL CHECK (length(counted_by) BETWEEN 1 AND 200),
    note             text NOT NULL DEFAULT '' CHECK (length(note) <= 2000),
    sensor_quantity  double precision CHECK (sensor_quantity >= 0 AND sensor_quantity < 'Infinity'),
    recorded_by      text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inspections_lot_latest ON inspections (lot_id, counted_at DESC, id DESC);
CREATE INDEX inspections_facility ON inspections (facility_id, counted_at DESC);
