//! Delivering an `email` row.

use super::Worker;
use crate::store::outbox::OutboxRow;

impl Worker {
    pub(super) async fn deliver_email(&self, _row: &OutboxRow) -> anyhow::Result<()> {
        anyhow::bail!("email delivery is not built yet")
    }
}
