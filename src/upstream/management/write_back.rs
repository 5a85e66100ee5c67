//! Local changes mirrored to the upstream (`[upstream.management]
//! write_back`), so that the old provider, kept as the secondary after the
//! switchover, holds what the user last set and a rollback loses nothing.
//!
//! Each of [`Writer`]'s methods returns the outbox row to commit with the local change
//! (the `outbox` mode), or performs the write at once and returns `None`
//! (the `blocking` mode, whose refusal refuses the change), or returns
//! `None` when that kind is not written back or the user has no upstream
//! account.
//!
//! A queued password is sealed (AES-256-GCM) with the upstream token
//! keyring (`[upstream] token_keys_env`), bound to its outbox row's id; the
//! row keeps only the key id and the sealed bytes, the worker opens it at
//! delivery ([`Writer::open_password`]) and the store erases it once the
//! row is done.

use std::sync::Arc;

use anyhow::Context;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{Map, Value, json};

use super::writes::Change;
use super::{ManagementClient, Refused};
use crate::config::{Settings, WriteKind, WriteMode};
use crate::metrics::{Metrics, Outcome};
use crate::store::jobs::ProfileEdit;
use crate::store::outbox::{OutboxKind, OutboxRow, QueuedWrite, SealSecret};
use crate::store::{User, UserState};
use crate::upstream::provider::ProviderDef;
use crate::upstream::tokens::TokenSealer;

/// Tries of a blocking write: the user is waiting.
const BLOCKING_ATTEMPTS: u32 = 2;

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

/// What the write-back needs, built from the settings once: by `serve`'s
/// state and by the CLI, which has no running server.
pub struct Writer {
    modes: crate::config::WriteBack,
    /// For blocking writes.
    client: Option<ManagementClient>,
    /// Seals queued passwords; set whenever passwords are written back.
    sealer: Option<Arc<TokenSealer>>,
    /// `switchyard_writeback_total`, for the writes made here.
    counts: Option<Family<Outcome, Counter>>,
}

impl Writer {
    /// The writer the settings ask for; an error when they ask for a write
    /// the provider cannot make, or for passwords without a sealing key.
    pub fn from_settings(
        settings: &Settings,
        counts: Option<Family<Outcome, Counter>>,
    ) -> anyhow::Result<Self> {
        let Some(up) = settings
            .upstream
            .as_ref()
            .filter(|up| !up.management.write_back.is_empty())
        else {
            return Ok(Self {
                modes: Default::default(),
                client: None,
                sealer: None,
                counts,
            });
        };
        let modes = up.management.write_back.clone();
        let def = ProviderDef::load(&up.provider).map_err(anyhow::Error::msg)?;
        let writes = def.management.map(|m| m.write).with_context(|| {
            format!(
                "provider {} has no Management API to write back to",
                up.provider
            )
        })?;
        for (kind, present) in [
            (WriteKind::Password, writes.password.is_some()),
            (WriteKind::Profile, writes.profile.is_some()),
            (
                WriteKind::Blocked,
                writes.block.is_some() && writes.unblock.is_some(),
            ),
        ] {
            if modes.mode(kind).is_some() && !present {
                anyhow::bail!(
                    "upstream.management.write_back: provider {} describes no {} write",
                    up.provider,
                    kind.name()
                );
            }
        }
        let sealer = match modes.mode(WriteKind::Password) {
            Some(_) => Some(Arc::new(password_sealer(&up.token_keys_env)?)),
            None => None,
        };
        let client = if modes.0.values().any(|m| *m == WriteMode::Blocking) {
            Some(
                ManagementClient::new(up, None, None)
                    .context("upstream.management.write_back needs the Management API")?,
            )
        } else {
            None
        };
        Ok(Self {
            modes,
            client,
            sealer,
            counts,
        })
    }

    /// The user's new password.
    pub async fn password(&self, user: &User, password: &str) -> anyhow::Result<Owed> {
        let secret = self.sealer.clone().map(|sealer| {
            Box::new(SealedPassword {
                sealer,
                password: password.to_string(),
            }) as Box<dyn SealSecret>
        });
        self.owe(
            WriteKind::Password,
            user,
            Change::Password(password),
            Map::new(),
            secret,
        )
        .await
    }

    /// The profile fields `edit` sets; nothing when it sets none.
    pub async fn profile(&self, user: &User, edit: &ProfileEdit) -> anyhow::Result<Owed> {
        let mut fields = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                fields.insert(k.into(), v);
            }
        };
        put("email", edit.email.clone().map(Value::from));
        put("email_verified", edit.email_verified.map(Value::from));
        put("name", edit.name.clone().map(Value::from));
        put("given_name", edit.given_name.clone().map(Value::from));
        put("family_name", edit.family_name.clone().map(Value::from));
        put("nickname", edit.nickname.clone().map(Value::from));
        if fields.is_empty() {
            return Ok(Ok(None));
        }
        let mut extra = Map::new();
        extra.insert("fields".into(), Value::Object(fields.clone()));
        self.owe(
            WriteKind::Profile,
            user,
            Change::Profile(&fields),
            extra,
            None,
        )
        .await
    }

    /// Blocks or unblocks `user`, with the write-back it owes and `event`
    /// in one transaction: the one block path of the CLI and the admin API.
    /// `Ok(Err(refusal))` when a blocking write was refused (nothing
    /// changed); `Ok(Ok(false))` when the user no longer exists.
    pub async fn set_blocked(
        &self,
        db: &dyn crate::store::Database,
        user: &User,
        blocked: bool,
        event: &crate::store::AuditEvent,
    ) -> anyhow::Result<Result<bool, Refusal>> {
        let owed = match self.blocked(user, blocked).await? {
            Ok(owed) => owed,
            Err(refusal) => return Ok(Err(refusal)),
        };
        Ok(Ok(db
            .set_blocked(&user.id, blocked, owed.as_ref(), event)
            .await?))
    }

    /// The user blocked or unblocked.
    pub async fn blocked(&self, user: &User, blocked: bool) -> anyhow::Result<Owed> {
        let mut extra = Map::new();
        extra.insert("blocked".into(), Value::Bool(blocked));
        self.owe(
            WriteKind::Blocked,
            user,
            Change::Blocked(blocked),
            extra,
            None,
        )
        .await
    }

    async fn owe(
        &self,
        kind: WriteKind,
        user: &User,
        change: Change<'_>,
        extra: Map<String, Value>,
        secret: Option<Box<dyn SealSecret>>,
    ) -> anyhow::Result<Owed> {
        let Some(mode) = self.modes.mode(kind) else {
            return Ok(Ok(None));
        };
        // A local user has no upstream account to keep in step.
        if user.upstream.is_none() || user.state == UserState::Local {
            return Ok(Ok(None));
        }
        let mut payload = target(user);
        if let Value::Object(map) = &mut payload {
            map.extend(extra);
        }
        match mode {
            WriteMode::Outbox => Ok(Ok(Some(QueuedWrite {
                kind: outbox_kind(kind),
                user_id: user.id.clone(),
                payload,
                secret,
            }))),
            WriteMode::Blocking => {
                let client = self
                    .client
                    .as_ref()
                    .context("a blocking write-back has no Management API client")?;
                let result = client.write_back(&payload, change, BLOCKING_ATTEMPTS).await;
                let (outcome, owed) = match result {
                    Ok(()) => ("done", Ok(None)),
                    Err(e) => match e.downcast_ref::<Refused>() {
                        Some(r) => {
                            tracing::warn!(user = %user.id, what = kind.name(), error = %r.message,
                                "the upstream refused a blocking write-back; the local change is refused");
                            ("refused", Err(Refusal::Refused(r.vendor.clone())))
                        }
                        None => {
                            tracing::warn!(user = %user.id, what = kind.name(), error = %format!("{e:#}"),
                                "a blocking write-back could not reach the upstream; the local change is refused");
                            ("failed", Err(Refusal::Unavailable))
                        }
                    },
                };
                if let Some(counts) = &self.counts {
                    Metrics::count(counts, kind.name(), outcome);
                }
                Ok(owed)
            }
        }
    }

    /// The password a `write_password` row carries, opened: only the
    /// worker delivering the row calls this.
    pub fn open_password(&self, row: &OutboxRow) -> anyhow::Result<String> {
        let sealer = self
            .sealer
            .as_ref()
            .context("a queued password needs the upstream token keys to open")?;
        let sealed = &row.payload["sealed"];
        let (Some(kid), Some(ct)) = (sealed["kid"].as_str(), sealed["ct"].as_str()) else {
            anyhow::bail!("the outbox row carries no sealed password");
        };
        let plain = sealer
            .open_raw(kid, ct, &aad(row.id))
            .with_context(|| format!("the queued password does not open (key {kid:?} retired?)"))?;
        String::from_utf8(plain).context("the queued password is not UTF-8")
    }
}

/// The write kind an outbox row delivers, if it is a write-back.
pub fn write_kind(kind: OutboxKind) -> Option<WriteKind> {
    match kind {
        OutboxKind::WritePassword => Some(WriteKind::Password),
        OutboxKind::WriteProfile => Some(WriteKind::Profile),
        OutboxKind::WriteBlocked => Some(WriteKind::Blocked),
        OutboxKind::MarkMigrated | OutboxKind::Email => None,
    }
}

fn outbox_kind(kind: WriteKind) -> OutboxKind {
    match kind {
        WriteKind::Password => OutboxKind::WritePassword,
        WriteKind::Profile => OutboxKind::WriteProfile,
        WriteKind::Blocked => OutboxKind::WriteBlocked,
    }
}

/// Who the write is for at the upstream: its id (the user's `sub`, which
/// for a user from the upstream is the upstream's id) and its user name
/// (Cognito's `Username`).
fn target(user: &User) -> Value {
    json!({
        "upstream_id": user.id,
        "username": user.profile.username.as_deref().unwrap_or(&user.id),
    })
}

/// The keyring queued passwords are sealed with. Unlike upstream tokens
/// in the in-process session store, a queued password outlives the
/// process, so a random key will not do.
fn password_sealer(var: &str) -> anyhow::Result<TokenSealer> {
    match std::env::var(var) {
        Ok(spec) if !spec.trim().is_empty() => {
            TokenSealer::parse(&spec).map_err(anyhow::Error::msg)
        }
        _ => anyhow::bail!(
            "upstream.management.write_back includes password: set ${var} (kid=base64key) so that queued passwords are sealed"
        ),
    }
}

/// The associated data of a row's sealed password: its id, so that a
/// sealed value copied into another row does not open there.
fn aad(row_id: i64) -> Vec<u8> {
    format!("switchyard-outbox-row:{row_id}").into_bytes()
}

/// A password sealed into its row once the row's id is known.
struct SealedPassword {
    sealer: Arc<TokenSealer>,
    password: String,
}

impl SealSecret for SealedPassword {
    fn seal(&self, row_id: i64) -> Value {
        let (kid, ct) = self.sealer.seal_raw(self.password.as_bytes(), &aad(row_id));
        json!({ "kid": kid, "ct": ct })
    }
}
