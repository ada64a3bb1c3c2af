-- One pledge, one registration number, however it is typed: `ZDW-2026-0001`, `zdw 2026 0001 ` and
-- `ＺＤＷ－２０２６－０００１` are the same number. `registration_key` is generated from the number
-- (Unicode NFKC, lower case, whitespace, punctuation and invisible characters removed) and is
-- unique, so the database refuses a duplicate pledge even when a check is bypassed or two writers
-- race. The character class is `lending.domain.pledges.SEPARATORS` (a test compares the two); the
-- Python key is stricter still, so the portfolio check refuses (and alerts) first.
-- Needs a UTF8 database (normalize() refuses other encodings). Applying it fails if two lots
-- already share a key: resolve those duplicates first.
-- depends: 0006_receivable_review

CREATE FUNCTION pledge_registration_key(number text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT regexp_replace(lower(normalize(number, NFKC)), '[\u0001-\u002F\u003A-\u0040\u005B-\u0060\u007B-\u00BF\u00D7\u00F7\u2000-\u206F\u2E00-\u2E7F\u3000-\u3004\u3008-\u3020\u3030\u303D-\u303F\u30FB\uFE10-\uFE1F\uFE30-\uFE4F\uFEFF\uFF01-\uFF0F\uFF1A-\uFF20\uFF3B-\uFF40\uFF5B-\uFF65]', '', 'g')
$$;

ALTER TABLE lots
    ADD COLUMN registration_key text GENERATED ALWAYS AS (pledge_registration_key(registration_no)) STORED,
    ADD CONSTRAINT lots_registration_key_not_empty CHECK (registration_key <> '');
CREATE UNIQUE INDEX lots_registration_key ON lots (registration_key);
