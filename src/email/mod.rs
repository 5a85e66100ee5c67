//! Email to users: reset links and the end-game invitations.
//!
//! A message is asked for by queueing an [`EmailRequest`] in the outbox
//! (kind `email`), so a request never waits on a mail server and a crash
//! never loses a message; the outbox worker renders and sends it
//! (`jobs::outbox`): it mints the link at that moment, so the row holds no
//! secret, [`render`]s the message from `templates/email/` and hands it to
//! the [`Mailer`], which sends it by SMTP or, with no server configured,
//! writes it as a file.
//!
//! Neither a link nor a token is ever logged: a log line names at most the
//! recipient's domain.

use serde::{Deserialize, Serialize};

use crate::store::outbox::{OutboxKind, QueuedWrite};

mod mailer;
mod render;

pub use mailer::{Mailer, Undeliverable};
pub use render::{Rendered, Vars, render};

/// Which message to send; each has its own templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// "Forgot password": a link to set a new one.
    PasswordReset,
    /// The campaign's "we moved sign-in; set your password here".
    Invitation,
}

/// An email the outbox owes a user: the row's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailRequest {
    pub message: Message,
    /// The address, as the user's record had it when the email was asked for.
    pub to: String,
    /// The pending authorization request a reset continues, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz: Option<String>,
}

impl EmailRequest {
    /// The outbox row that sends it to `user_id`.
    pub fn queued(&self, user_id: &str) -> QueuedWrite {
        QueuedWrite {
            kind: OutboxKind::Email,
            user_id: user_id.to_string(),
            payload: serde_json::to_value(self).unwrap_or_default(),
            secret: None,
        }
    }
}
