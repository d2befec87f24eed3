-- Times are INTEGER milliseconds since the Unix epoch (UTC); money is INTEGER fen.

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    -- NULL once the account is deleted: the row stays so payments and the
    -- ledger keep a (now anonymous) owner.
    openid      TEXT UNIQUE,
    unionid     TEXT,
    created_at  INTEGER NOT NULL,
    last_login_at INTEGER NOT NULL,
    deleted_at  INTEGER,
    CHECK ((deleted_at IS NULL) = (openid IS NOT NULL))
);

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX sessions_by_user_activity ON sessions(user_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content     TEXT NOT NULL,
    model       TEXT,
    status      TEXT NOT NULL CHECK (status IN ('complete', 'generating', 'failed')),
    -- the user message this assistant message answers
    reply_to    TEXT,
    client_msg_id TEXT,
    prompt_tokens INTEGER CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER CHECK (completion_tokens >= 0),
    created_at  INTEGER NOT NULL
);
CREATE INDEX messages_by_session ON messages(session_id, seq);
CREATE UNIQUE INDEX messages_client_msg_id ON messages(user_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_reply_to ON messages(reply_to) WHERE reply_to IS NOT NULL;

CREATE TABLE media (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    object_key   TEXT NOT NULL UNIQUE,
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL CHECK (size > 0),
    state        TEXT NOT NULL CHECK (state IN ('pending', 'committed')),
    created_at   INTEGER NOT NULL,
    committed_at INTEGER
);
CREATE INDEX media_by_user ON media(user_id, created_at);

CREATE TABLE location_logs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    latitude    REAL NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude   REAL NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    accuracy    REAL CHECK (accuracy >= 0),
    coord_type  TEXT NOT NULL CHECK (coord_type IN ('gcj02', 'wgs84')),
    recorded_at INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX location_by_user_time ON location_logs(user_id, recorded_at DESC, id DESC);
CREATE INDEX location_by_time ON location_logs(recorded_at);

CREATE TABLE payments (
    out_trade_no   TEXT PRIMARY KEY CHECK (length(out_trade_no) BETWEEN 6 AND 32),
    -- kept (anonymised) when the user deletes their account
    user_id        TEXT NOT NULL REFERENCES users(id),
    payer_openid   TEXT,
    amount_fen     INTEGER NOT NULL CHECK (amount_fen > 0),
    status         TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'closed', 'failed')),
    transaction_id TEXT UNIQUE,
    prepay_id      TEXT,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    paid_at        INTEGER,
    CHECK ((status = 'paid') = (transaction_id IS NOT NULL AND paid_at IS NOT NULL))
);
CREATE INDEX payments_by_user ON payments(user_id, created_at);
CREATE INDEX payments_pending ON payments(status, created_at) WHERE status = 'pending';

CREATE TABLE user_quotas (
    user_id     TEXT PRIMARY KEY REFERENCES users(id),
    -- equals the sum of the user's ledger rows (checked by `admin audit`)
    balance_fen INTEGER NOT NULL DEFAULT 0 CHECK (balance_fen >= 0),
    -- fen set aside by in-flight paid messages; never more than the balance
    held_fen    INTEGER NOT NULL DEFAULT 0 CHECK (held_fen >= 0 AND held_fen <= balance_fen),
    -- local calendar day (quota.timezone) that free_used counts
    free_day    TEXT NOT NULL DEFAULT '',
    free_used   INTEGER NOT NULL DEFAULT 0 CHECK (free_used >= 0),
    updated_at  INTEGER NOT NULL
);

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE ledger (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       TEXT NOT NULL REFERENCES users(id),
    delta_fen     INTEGER NOT NULL CHECK (delta_fen <> 0),
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    kind          TEXT NOT NULL CHECK (kind IN ('topup', 'charge', 'grant')),
    -- what caused it: an out_trade_no, a message id, or an operator reason
    reference     TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX ledger_by_user ON ledger(user_id, id);
-- a message is charged at most once; a payment credited at most once
CREATE UNIQUE INDEX ledger_once ON ledger(kind, reference) WHERE kind IN ('topup', 'charge');

CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;

-- A message in flight: what it holds (a free message or fen) until it is
-- settled or released.
CREATE TABLE reservations (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    message_id  TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('free', 'paid')),
    amount_fen  INTEGER NOT NULL CHECK (amount_fen >= 0),
    free_day    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('held', 'settled', 'released')),
    created_at  INTEGER NOT NULL,
    closed_at   INTEGER
);
CREATE INDEX reservations_held ON reservations(state) WHERE state = 'held';
CREATE UNIQUE INDEX reservations_by_message ON reservations(message_id);
