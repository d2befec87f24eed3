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
    pub LedgerKind { Topup = "topup", Charge = "charge", Grant = "grant" }
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
