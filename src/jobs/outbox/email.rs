//! Delivering an `email` row: the user is looked up again, a fresh link is
//! minted (the row holds no token, by design: [`crate::recovery`]), the
//! message rendered and handed to the mailer.

use anyhow::Context;

use super::Worker;
use crate::email::{EmailRequest, Mailer, Message, Undeliverable, Vars, render};
use crate::recovery::mint_link;
use crate::store::outbox::OutboxRow;
use crate::store::recovery::Purpose;

impl Worker {
    pub(super) async fn deliver_email(&self, row: &OutboxRow) -> anyhow::Result<()> {
        let request: EmailRequest = serde_json::from_value(row.payload.clone())
            .map_err(|_| Undeliverable("the row is not an email request".into()))?;
        let domain = domain_of(&request.to);
        let state = &self.state;
        // The user as they are now, not as they were when the email was
        // asked for: a link is never sent for an account that is gone or
        // blocked, nor to an address the account no longer has (OWASP
        // Forgot Password Cheat Sheet: the link goes to the address on
        // record).
        let user = state.db.get_user(&row.user_id).await?;
        let skip = match &user {
            None => Some("the user no longer exists"),
            Some(u) if u.blocked => Some("the user is blocked"),
            Some(u)
                if !u
                    .profile
                    .email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(&request.to)) =>
            {
                Some("the user's address changed since it was asked for")
            }
            Some(_) => None,
        };
        if let Some(why) = skip {
            tracing::info!(
                outbox = row.id, user = %row.user_id, message = ?request.message, to_domain = %domain,
                "email not sent: {why}"
            );
            return Ok(());
        }
        Mailer::check_recipient(&request.to)?;
        let (purpose, ttl_secs) = match request.message {
            Message::PasswordReset => (Purpose::Reset, state.settings.recovery.token_ttl_secs),
            Message::Invitation => (Purpose::Invite, state.settings.recovery.invite_ttl_secs),
        };
        let link = mint_link(state, &row.user_id, purpose, request.authz.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("minting the link: {e}"))?;
        let issuer_host = issuer_host(state.settings.issuer_base());
        let rendered = render(
            request.message,
            &Vars {
                link: &link,
                ttl_secs,
                issuer_host: &issuer_host,
                email: &request.to,
            },
        )
        .context("rendering the message")?;
        state.mailer.send(&request.to, rendered).await?;
        tracing::info!(
            outbox = row.id, user = %row.user_id, message = ?request.message, to_domain = %domain,
            "email sent"
        );
        Ok(())
    }
}

/// The part of an address a log line may show.
fn domain_of(address: &str) -> &str {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>'))
        .unwrap_or("(none)")
}

/// The host (and port, when it has one) users sign in at.
fn issuer_host(issuer: &str) -> String {
    match url::Url::parse(issuer) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => issuer.to_string(),
        },
        Err(_) => issuer.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_a_domain_and_messages_a_host() {
        assert_eq!(domain_of("a.b@example.com"), "example.com");
        assert_eq!(domain_of("nobody"), "(none)");
        assert_eq!(issuer_host("https://id.example.com"), "id.example.com");
        assert_eq!(issuer_host("http://127.0.0.1:8080"), "127.0.0.1:8080");
    }
}
