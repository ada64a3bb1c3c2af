-- Receivables posted by an enterprise through the API count toward the borrowing base only after
-- an officer has checked them (a fake invoice must not raise a limit). Rows loaded by the bank
-- (portfolio files, officers) are verified when they are written.
-- depends: 0005_notifications

ALTER TABLE receivables
    ADD COLUMN verified    boolean NOT NULL DEFAULT true,
    ADD COLUMN verified_at timestamptz,
    ADD COLUMN verified_by text,
    ADD COLUMN posted_by   text;
