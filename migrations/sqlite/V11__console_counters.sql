-- What the operator console shows that was not kept before.
--
-- 402 quota_exhausted answers per local day (quota.timezone), one counter
-- row a day, so the overview survives a restart.
CREATE TABLE quota_refusals (
    day   TEXT PRIMARY KEY,
    count INTEGER NOT NULL CHECK (count >= 0)
);

-- Why a failed upstream call failed: a short text (HTTP status and the
-- upstream's message, at most 200 characters, key-like words redacted),
-- never the request body or an API key. NULL for calls that succeeded.
ALTER TABLE llm_calls ADD COLUMN error TEXT;
