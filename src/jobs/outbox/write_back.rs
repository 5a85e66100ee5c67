//! Delivering a `write_*` row: a local change written to the upstream.

use super::Worker;
use crate::store::outbox::OutboxRow;

impl Worker {
    pub(super) async fn deliver_write(&self, _row: &OutboxRow) -> anyhow::Result<()> {
        anyhow::bail!("write-back is not built yet")
    }
}
