-- Every upstream model call: who, which provider/model, tokens, latency,
-- outcome and what it cost (in nano-units of the upstream's currency, so
-- per-million-token prices with up to three decimals are exact integers).
CREATE TABLE llm_calls (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id           TEXT REFERENCES users(id),
    message_id        TEXT,
    model             TEXT NOT NULL,
    provider          TEXT NOT NULL,
    provider_model    TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    -- 1 when the upstream reported no usage and tokens were estimated
    estimated         INTEGER NOT NULL DEFAULT 0 CHECK (estimated IN (0, 1)),
    latency_ms        INTEGER NOT NULL CHECK (latency_ms >= 0),
    outcome           TEXT NOT NULL CHECK (outcome IN ('ok', 'partial', 'error', 'timeout')),
    cost_nanos        INTEGER NOT NULL DEFAULT 0 CHECK (cost_nanos >= 0),
    created_at        INTEGER NOT NULL
);
CREATE INDEX llm_calls_by_time ON llm_calls(created_at);
CREATE INDEX llm_calls_by_message ON llm_calls(message_id) WHERE message_id IS NOT NULL;

-- Running spend per budget period ('d:2026-11-25', 'm:2026-11', local time),
-- so the budget check before each chat is two point lookups.
CREATE TABLE llm_spend (
    period     TEXT PRIMARY KEY,
    cost_nanos INTEGER NOT NULL CHECK (cost_nanos >= 0)
);
