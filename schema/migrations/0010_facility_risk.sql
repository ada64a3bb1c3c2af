-- Facility risk. `sales.recorded_at` is when the store received a sale: sales of days
-- already closed that are still arriving (a history posted invoice by invoice) make the
-- sales-collapse rule hold until the load has settled, so it is judged once, not after every
-- invoice. `limit_snapshots.trusted_collateral_value` is Σ lot value × trust, what LTV and the
-- value floor measure (`collateral_value` stays the value before trust); NULL in snapshots stored
-- before it existed (their inputs still give it: Σ lots' value × trust).
-- depends: 0006_receivable_review

ALTER TABLE sales ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE limit_snapshots ADD COLUMN trusted_collateral_value numeric(20, 2);
