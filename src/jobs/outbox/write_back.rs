//! Delivering a `write_*` row: a local change written to the upstream.
//! A queued password is opened here, for the one request that carries it,
//! and the store erases its sealed form once the row is done.

use anyhow::Context;
use serde_json::Value;

use super::{REQUEST_ATTEMPTS, Worker};
use crate::store::outbox::{OutboxKind, OutboxRow};
use crate::upstream::management::writes::Change;

impl Worker {
    pub(super) async fn deliver_write(&self, row: &OutboxRow) -> anyhow::Result<()> {
        let client = self.upstream()?;
        match row.kind {
            OutboxKind::WritePassword => {
                let password = self.state.write_back.open_password(row)?;
                client
                    .write_back(&row.payload, Change::Password(&password), REQUEST_ATTEMPTS)
                    .await
            }
            OutboxKind::WriteProfile => {
                let Some(Value::Object(fields)) = row.payload.get("fields") else {
                    anyhow::bail!("the outbox row names no profile fields");
                };
                client
                    .write_back(&row.payload, Change::Profile(fields), REQUEST_ATTEMPTS)
                    .await
            }
            OutboxKind::WriteBlocked => {
                let blocked = row.payload["blocked"]
                    .as_bool()
                    .context("the outbox row does not say blocked or not")?;
                client
                    .write_back(&row.payload, Change::Blocked(blocked), REQUEST_ATTEMPTS)
                    .await
            }
            OutboxKind::WriteDelete => {
                client
                    .write_back(&row.payload, Change::Delete, REQUEST_ATTEMPTS)
                    .await
            }
            OutboxKind::MarkMigrated | OutboxKind::Email => {
                anyhow::bail!("a {} row is not a write-back", row.kind)
            }
        }
    }
}
