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
use serde_json::{Value, json};

use super::writes::Change;
use super::{ManagementClient, Refused, Throttled};
use crate::config::{Settings, TOKEN_KEYS_ENV, WriteKind, WriteMode};
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
    /// The upstream refused it for good, with its status (400 for a
    /// policy, 409 for a conflict, …); its message is safe to show (a
    /// password policy's words).
    Refused { status: u16, message: String },
    /// The upstream is rate limiting; it asked to wait this long.
    Throttled(Option<std::time::Duration>),
    /// The upstream could not be asked.
    Unavailable,
}

impl Refusal {
    /// The refusal an upstream call's error amounts to.
    pub fn of(e: &anyhow::Error) -> Self {
        if let Some(r) = e.downcast_ref::<Refused>() {
            Refusal::Refused {
                status: r.status.as_u16(),
                message: r.vendor.clone(),
            }
        } else if let Some(t) = e.downcast_ref::<Throttled>() {
            Refusal::Throttled(t.retry_after)
        } else {
            Refusal::Unavailable
        }
    }
}

/// What a local change owes the upstream.
pub type Owed = Result<Option<QueuedWrite>, Refusal>;

/// What the write-back needs, built from the settings once: by `serve`'s
/// state and by the CLI, which has no running server.
pub struct Writer {
    modes: crate::config::WriteBack,
    /// For blocking writes and the Management API's read-through.
    client: Option<ManagementClient>,
    /// Seals queued passwords; set whenever the keyring is.
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
        let Some(up) = &settings.upstream else {
            return Ok(Self {
                modes: Default::default(),
                client: None,
                sealer: None,
                counts,
            });
        };
        let modes = up.management.write_back.clone();
        let def = ProviderDef::load(&up.provider).map_err(anyhow::Error::msg)?;
        if !modes.is_empty() {
            let writes = def.management.as_ref().map(|m| &m.write).with_context(|| {
                format!(
                    "provider {} has no Management API to write back to",
                    up.provider
                )
            })?;
            for kind in modes.0.keys() {
                if !writes.has(*kind) {
                    anyhow::bail!(
                        "upstream.management.write_back: provider {} describes no {} write",
                        up.provider,
                        kind.name()
                    );
                }
            }
        }
        // Queued passwords need the keyring; the Management API on
        // Switchyard may queue one whatever `write_back` says, so the
        // keyring is taken whenever it is set.
        let sealer = match modes.mode(WriteKind::Password) {
            Some(_) => Some(Arc::new(password_sealer(&up.token_keys_env)?)),
            None => password_sealer(&up.token_keys_env).ok().map(Arc::new),
        };
        // The client serves blocking writes, and the Management API on
        // Switchyard while the upstream is the primary; without blocking
        // writes, a provider or settings without a usable Management API
        // only leave that API local.
        let blocking = modes.0.values().any(|m| *m == WriteMode::Blocking);
        let client = if def.management.is_none() && !blocking {
            None
        } else {
            match ManagementClient::new(up, None, None) {
                Ok(client) => Some(client),
                Err(e) if blocking => {
                    return Err(
                        e.context("upstream.management.write_back needs the Management API")
                    );
                }
                Err(e) => {
                    tracing::info!(error = %format!("{e:#}"), "the upstream's Management API is not usable with these settings: /api/v2/ serves local users only");
                    None
                }
            }
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
        self.owe(WriteKind::Password, user, Change::Password(password))
            .await
    }

    /// The profile fields `edit` sets; nothing when it sets none.
    pub async fn profile(&self, user: &User, edit: &ProfileEdit) -> anyhow::Result<Owed> {
        let fields = edit.fields();
        if fields.is_empty() {
            return Ok(Ok(None));
        }
        self.owe(WriteKind::Profile, user, Change::Profile(&fields))
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
        self.owe(WriteKind::Blocked, user, Change::Blocked(blocked))
            .await
    }

    /// What `change` owes the upstream under `write_back`.
    async fn owe(&self, kind: WriteKind, user: &User, change: Change<'_>) -> anyhow::Result<Owed> {
        match self.modes.mode(kind) {
            Some(mode) => self.owe_in(mode, user, change).await,
            None => Ok(Ok(None)),
        }
    }

    /// What `change` owes the upstream in `mode`, whatever `write_back`
    /// says: the Management API (`/api/v2/`) decides the mode by phase.
    /// Nothing for a user with no upstream account.
    pub async fn owe_in(
        &self,
        mode: WriteMode,
        user: &User,
        change: Change<'_>,
    ) -> anyhow::Result<Owed> {
        let kind = change.kind();
        // A local user has no upstream account to keep in step.
        if user.upstream.is_none() || user.state == UserState::Local {
            return Ok(Ok(None));
        }
        let mut payload = target(user);
        let mut secret: Option<Box<dyn SealSecret>> = None;
        match change {
            Change::Password(password) => {
                let Some(sealer) = self.sealer.clone() else {
                    if mode == WriteMode::Outbox {
                        tracing::warn!(user = %user.id, "a password cannot be queued for the upstream without ${TOKEN_KEYS_ENV}; the change is refused");
                        return Ok(Err(Refusal::Unavailable));
                    }
                    return self.perform(kind, user, &payload, change).await;
                };
                secret = Some(Box::new(SealedPassword {
                    sealer,
                    password: password.to_string(),
                }));
            }
            Change::Profile(fields) => {
                payload["fields"] = Value::Object(fields.clone());
            }
            Change::Blocked(blocked) => {
                payload["blocked"] = Value::Bool(blocked);
            }
            Change::Delete => {}
        }
        match mode {
            WriteMode::Outbox => Ok(Ok(Some(QueuedWrite {
                kind: outbox_kind(kind),
                user_id: user.id.clone(),
                payload,
                secret,
            }))),
            WriteMode::Blocking => self.perform(kind, user, &payload, change).await,
        }
    }

    /// The upstream's Management API client, when it has one that works
    /// with these settings.
    pub fn upstream(&self) -> Option<&ManagementClient> {
        self.client.as_ref()
    }

    /// A blocking write, counted; its refusal is the local change's.
    async fn perform(
        &self,
        kind: WriteKind,
        user: &User,
        payload: &Value,
        change: Change<'_>,
    ) -> anyhow::Result<Owed> {
        let client = self
            .client
            .as_ref()
            .context("a blocking write-back has no Management API client")?;
        let result = client.write_back(payload, change, BLOCKING_ATTEMPTS).await;
        let (outcome, owed) = match result {
            Ok(()) => ("done", Ok(None)),
            Err(e) => {
                let refusal = Refusal::of(&e);
                match &refusal {
                    Refusal::Refused { .. } => {
                        tracing::warn!(user = %user.id, what = kind.name(), error = %format!("{e:#}"),
                        "the upstream refused a blocking write; the local change is refused")
                    }
                    _ => {
                        tracing::warn!(user = %user.id, what = kind.name(), error = %format!("{e:#}"),
                        "a blocking write could not reach the upstream; the local change is refused")
                    }
                }
                ("refused", Err(refusal))
            }
        };
        if let Some(counts) = &self.counts {
            let outcome = match &owed {
                Err(Refusal::Refused { .. }) | Ok(_) => outcome,
                Err(_) => "failed",
            };
            Metrics::count(counts, kind.name(), outcome);
        }
        Ok(owed)
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
        OutboxKind::WriteDelete => Some(WriteKind::Delete),
        OutboxKind::MarkMigrated | OutboxKind::Email => None,
    }
}

fn outbox_kind(kind: WriteKind) -> OutboxKind {
    match kind {
        WriteKind::Password => OutboxKind::WritePassword,
        WriteKind::Profile => OutboxKind::WriteProfile,
        WriteKind::Blocked => OutboxKind::WriteBlocked,
        WriteKind::Delete => OutboxKind::WriteDelete,
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
