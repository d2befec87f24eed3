-- Refunds (issue 15): a verified REFUND.SUCCESS debits the refunded amount
-- once, as a `refund` ledger row, never below what is spendable; what the
-- user had already spent is recorded as a shortfall.

-- The ledger gains the `refund` kind (SQLite cannot alter a CHECK: the
-- table is rebuilt with its rows, ids, indexes and append-only triggers).
DROP TRIGGER ledger_no_update;
DROP TRIGGER ledger_no_delete;
CREATE TABLE ledger_v6 (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       TEXT NOT NULL REFERENCES users(id),
    delta_fen     INTEGER NOT NULL CHECK (delta_fen <> 0),
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    kind          TEXT NOT NULL CHECK (kind IN ('topup', 'charge', 'grant', 'refund')),
    -- what caused it: an out_trade_no, a message id, a refund id, or an operator reason
    reference     TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
INSERT INTO ledger_v6 (id, user_id, delta_fen, balance_after, kind, reference, created_at)
    SELECT id, user_id, delta_fen, balance_after, kind, reference, created_at FROM ledger;
DROP TABLE ledger;
ALTER TABLE ledger_v6 RENAME TO ledger;
CREATE INDEX ledger_by_user ON ledger(user_id, id);
-- a message is charged at most once; a payment credited at most once; a
-- refund debited at most once
CREATE UNIQUE INDEX ledger_once ON ledger(kind, reference) WHERE kind IN ('topup', 'charge', 'refund');
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;

-- One row per WeChat Pay refund id: what was refunded, what could be
-- debited, and the shortfall (refunded but already spent).
CREATE TABLE refunds (
    refund_id     TEXT PRIMARY KEY,
    out_trade_no  TEXT NOT NULL REFERENCES payments(out_trade_no),
    user_id       TEXT NOT NULL REFERENCES users(id),
    amount_fen    INTEGER NOT NULL CHECK (amount_fen > 0),
    debited_fen   INTEGER NOT NULL CHECK (debited_fen >= 0),
    shortfall_fen INTEGER NOT NULL CHECK (shortfall_fen >= 0 AND debited_fen + shortfall_fen = amount_fen),
    created_at    INTEGER NOT NULL
);
CREATE INDEX refunds_by_user ON refunds(user_id);
CREATE INDEX refunds_by_order ON refunds(out_trade_no);
