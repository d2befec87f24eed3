//! The closed sets of a conversation, as stored and as clients see them.

use crate::sql_enum;

sql_enum!(
    /// Who wrote a message.
    pub Role { User = "user", Assistant = "assistant" }
);

sql_enum!(
    /// A reply is `generating` until it is stored `complete` (and charged),
    /// `failed` (partial output kept, nothing charged) or `blocked` (content
    /// security withheld it: a fixed notice stored, nothing charged).
    pub MessageStatus {
        Complete = "complete",
        Generating = "generating",
        Failed = "failed",
        Blocked = "blocked",
    }
);
