//! What clients see of conversations: a stored row is not the JSON a
//! client gets (timestamps become RFC 3339, attachments are listed only on
//! messages that carried some).

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::types::{MessageStatus, Role};
use crate::billing::ReplyQuota;
use crate::clock::rfc3339;
use crate::db::chat::{MessageRow, SessionRow};
use crate::ids::{MessageId, SessionId};

/// A stored message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageView {
    pub id: MessageId,
    pub role: Role,
    pub content: String,
    pub model: Option<String>,
    pub status: MessageStatus,
    /// RFC 3339 UTC
    pub created_at: String,
    /// Only on a user message that carried media: `[{id, content_type, filename}]`
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<Object>, nullable = false)]
    pub attachments: Option<Value>,
}

impl From<MessageRow> for MessageView {
    fn from(m: MessageRow) -> Self {
        MessageView {
            attachments: m
                .attachments
                .as_deref()
                .map(|a| serde_json::from_str(a).unwrap_or(Value::Null)),
            created_at: rfc3339(m.created_at),
            id: m.id,
            role: m.role,
            content: m.content,
            model: m.model,
            status: m.status,
        }
    }
}

/// A chat reply (also the SSE `done` event and the WebSocket `done` frame).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatReply {
    pub session_id: SessionId,
    pub message: MessageView,
    pub quota: ReplyQuota,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionView {
    pub id: SessionId,
    pub title: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<SessionRow> for SessionView {
    fn from(s: SessionRow) -> Self {
        SessionView {
            id: s.id,
            title: s.title,
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
        }
    }
}

/// Most recently active first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionPage {
    pub items: Vec<SessionView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// Pages run from newest to older; items within a page oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub items: Vec<MessageView>,
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_message_lists_attachments_only_when_it_carried_some() {
        let row = |attachments: Option<&str>| MessageRow {
            seq: 1,
            id: "msg_1".into(),
            session_id: "ses_1".into(),
            role: Role::User,
            content: "hi".into(),
            model: None,
            status: MessageStatus::Complete,
            created_at: 0,
            attachments: attachments.map(str::to_string),
        };
        let base = json!({"id": "msg_1", "role": "user", "content": "hi", "model": null,
            "status": "complete", "created_at": "1970-01-01T00:00:00.000Z"});
        let listed = r#"[{"id":"med","content_type":"image/png","filename":"a.png"}]"#;
        assert_eq!(json!(MessageView::from(row(None))), base);
        let mut with = base.clone();
        with["attachments"] = serde_json::from_str(listed).unwrap();
        assert_eq!(json!(MessageView::from(row(Some(listed)))), with);
        // an unreadable list shows as null, never breaks the listing
        with["attachments"] = Value::Null;
        assert_eq!(json!(MessageView::from(row(Some("not json")))), with);
    }
}
