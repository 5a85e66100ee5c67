//! Local changes mirrored to the upstream (`[upstream.management]
//! write_back`), so that the old provider, kept as the secondary after the
//! switchover, holds what the user last set and a rollback loses nothing.
//!
//! Each function returns the outbox row to commit with the local change
//! (the `outbox` mode), or performs the write at once and returns `None`
//! (the `blocking` mode, whose refusal refuses the change), or returns
//! `None` when that kind is not written back or the user has no upstream
//! account.

use crate::error::AppError;
use crate::state::AppState;
use crate::store::User;
use crate::store::outbox::QueuedWrite;

/// Why a blocking write refused the local change.
#[derive(Debug)]
pub enum Refusal {
    /// The upstream refused it for good; its message is safe to show (a
    /// password policy's words).
    Refused(String),
    /// The upstream could not be asked.
    Unavailable,
}

/// What a local change owes the upstream.
pub type Owed = Result<Option<QueuedWrite>, Refusal>;

/// The user's new password.
pub async fn password(_state: &AppState, _user: &User, _password: &str) -> Result<Owed, AppError> {
    Ok(Ok(None))
}
