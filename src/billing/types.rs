//! The closed sets of the money rule, as stored.

use crate::sql_enum;

sql_enum!(
    /// What a reservation holds: one free message, or `price_fen` of balance.
    pub ReservationKind { Free = "free", Paid = "paid" }
);

sql_enum!(
    /// A reservation is held until the work it pays for is settled or released.
    pub ReservationState { Held = "held", Settled = "settled", Released = "released" }
);

sql_enum!(
    /// Why a balance changed (one ledger row each).
    pub LedgerKind { Topup = "topup", Charge = "charge", Grant = "grant", Refund = "refund" }
);

sql_enum!(
    /// How an upstream call ended.
    pub CallOutcome {
        Ok = "ok",
        /// Output was produced, then the stream failed.
        Partial = "partial",
        Error = "error",
        Timeout = "timeout",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_exactly_and_refuse_unknown_text() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let c = crate::db::sql::Conn::sqlite(&db);
        for k in ReservationKind::ALL {
            let back: ReservationKind = c.query_row("SELECT ?1", [k], |r| r.get(0)).unwrap();
            assert_eq!(back, *k);
        }
        let unknown: crate::db::sql::DbResult<CallOutcome> =
            c.query_row("SELECT 'okay'", [], |r| r.get(0));
        assert!(
            unknown.is_err(),
            "an unknown outcome must not read as a default"
        );
        assert_eq!(serde_json::to_value(LedgerKind::Topup).unwrap(), "topup");
    }
}
