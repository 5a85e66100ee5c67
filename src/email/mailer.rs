//! The [`Mailer`]: how a rendered message leaves, by SMTP or as a file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::Rendered;
use crate::config::EmailSettings;

/// The submission ports: 587 for `smtp://` with STARTTLS (RFC 6409 §3.1),
/// 465 for implicit TLS (RFC 8314 §7.3).
const SUBMISSION_PORT: u16 = 587;
const SUBMISSIONS_PORT: u16 = 465;
/// One SMTP command's answer may take this long; a stuck server fails the
/// attempt, and the outbox retries it later.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a mail server's answer kept in a row's `last_error`.
const SERVER_TEXT_MAX: usize = 200;

/// A message that can never be delivered as it stands: a mail server's
/// permanent refusal (a 5xx reply, RFC 5321 §4.2.1) or an address that is
/// not one. Retrying cannot help, so the outbox gives up at once.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Undeliverable(pub String);

/// Sends rendered messages; built once at start ([`crate::state::State`]).
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    reply_to: Option<Mailbox>,
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// Each message an `.eml` file (RFC 5322) in this directory.
    Drop(PathBuf),
}

impl Mailer {
    /// The mailer `[email]` describes. Fails on an address that does not
    /// parse, an `smtp_url` that is not one, or a credential variable that
    /// is not set.
    pub fn new(settings: &EmailSettings) -> anyhow::Result<Self> {
        let from: Mailbox = settings
            .from
            .parse()
            .context("email.from is not an address (`Name <user@host>` or `user@host`)")?;
        let reply_to = match &settings.reply_to {
            Some(r) => Some(r.parse().context("email.reply_to is not an address")?),
            None => None,
        };
        let transport = match &settings.smtp_url {
            Some(url) => {
                let smtp = smtp_transport(url, settings)?;
                tracing::info!(server = %server_of(url), "email is sent by SMTP");
                Transport::Smtp(smtp)
            }
            None => {
                let dir = std::path::absolute(&settings.drop_dir)
                    .unwrap_or_else(|_| settings.drop_dir.clone());
                tracing::info!(
                    dir = %dir.display(),
                    "email is written as .eml files, not sent: set email.smtp_url to send it"
                );
                Transport::Drop(settings.drop_dir.clone())
            }
        };
        Ok(Self {
            transport,
            from,
            reply_to,
        })
    }

    /// Refuses an address that no message could be sent to, before a link
    /// is minted for it.
    pub fn check_recipient(to: &str) -> Result<(), Undeliverable> {
        recipient(to).map(|_| ())
    }

    /// Sends `rendered` to `to`. A permanent failure is an
    /// [`Undeliverable`] in the error's chain; any other is worth a retry.
    /// No error holds the message's content.
    pub async fn send(&self, to: &str, rendered: Rendered) -> anyhow::Result<()> {
        let to = recipient(to)?;
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(None);
        if let Some(r) = &self.reply_to {
            builder = builder.reply_to(r.clone());
        }
        let message = builder
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|e| Undeliverable(format!("the message could not be built: {e}")))?;
        match &self.transport {
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_permanent() => Err(Undeliverable(format!(
                    "the mail server refused the message: {}",
                    bounded(&e.to_string())
                ))
                .into()),
                Err(e) => Err(anyhow::anyhow!(
                    "the mail server could not take the message now: {}",
                    bounded(&e.to_string())
                )),
            },
            Transport::Drop(dir) => {
                let dir = dir.clone();
                let bytes = message.formatted();
                tokio::task::spawn_blocking(move || write_drop(&dir, &bytes))
                    .await
                    .context("writing the message file")?
            }
        }
    }
}

fn recipient(to: &str) -> Result<Mailbox, Undeliverable> {
    to.parse()
        .map_err(|_| Undeliverable("the recipient address is not a valid address".into()))
}

/// Writes one `.eml` into `dir`, creating it if missing. The name starts
/// with the time, so a listing sorts oldest first, and ends with random
/// characters, so two instances never collide; the file appears whole, by
/// a rename, so whoever watches the directory never reads half of one.
fn write_drop(dir: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the mail directory {}", dir.display()))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
    let unique: String = crate::crypto::random_token()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(10)
        .collect();
    let name = format!("{stamp}-{unique}");
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::write(&partial, bytes)
        .with_context(|| format!("writing a message into {}", dir.display()))?;
    std::fs::rename(&partial, dir.join(format!("{name}.eml")))
        .with_context(|| format!("writing a message into {}", dir.display()))?;
    Ok(())
}

/// The SMTP transport for `url`: `smtp://host[:port]` upgrades with
/// STARTTLS when the server offers it (RFC 3207), or insists with
/// `?tls=required`; `smtps://host[:port]` speaks TLS from the first byte
/// (RFC 8314 §3.3). Credentials come from the variables `[email]` names,
/// never from the URL, so the file holds no secret.
fn smtp_transport(
    url: &str,
    settings: &EmailSettings,
) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let parsed = url::Url::parse(url).map_err(|_| {
        anyhow::anyhow!("email.smtp_url is not a URL (smtp://host:port or smtps://host:port)")
    })?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        bail!(
            "email.smtp_url must not hold credentials: name their variables in email.username_env and email.password_env"
        );
    }
    let host = parsed
        .host_str()
        .context("email.smtp_url has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let tls_param = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let params = || {
        TlsParameters::new(host.clone())
            .context("email.smtp_url: TLS cannot be set up for its host")
    };
    let (tls, default_port) = match (parsed.scheme(), tls_param.as_deref()) {
        ("smtp", None | Some("opportunistic")) => (Tls::Opportunistic(params()?), SUBMISSION_PORT),
        ("smtp", Some("required")) => (Tls::Required(params()?), SUBMISSION_PORT),
        ("smtps", None) => (Tls::Wrapper(params()?), SUBMISSIONS_PORT),
        _ => bail!(
            "email.smtp_url: use smtp://host:port (optionally ?tls=required) or smtps://host:port"
        ),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(parsed.port().unwrap_or(default_port))
        .tls(tls)
        .timeout(Some(SMTP_TIMEOUT));
    let var = |name: &Option<String>, key: &str| -> anyhow::Result<Option<String>> {
        match name {
            Some(var) => std::env::var(var)
                .map(Some)
                .with_context(|| format!("email.{key} names {var}, which is not set")),
            None => Ok(None),
        }
    };
    match (
        var(&settings.username_env, "username_env")?,
        var(&settings.password_env, "password_env")?,
    ) {
        (Some(user), Some(password)) => {
            builder = builder.credentials(Credentials::new(user, password))
        }
        (None, None) => {}
        _ => bail!("email.username_env and email.password_env go together"),
    }
    Ok(builder.build())
}

/// `host:port` of an SMTP URL, for the log.
fn server_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(not a URL)".into(),
    }
}

/// A mail server's answer as kept in a row: one line of printable
/// characters, cut short.
fn bounded(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out: String = one_line.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().count() > SERVER_TEXT_MAX {
        out = out.chars().take(SERVER_TEXT_MAX).collect::<String>() + "…";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> anyhow::Result<Mailer> {
        Mailer::new(&EmailSettings {
            smtp_url: Some(url.into()),
            ..EmailSettings::default()
        })
    }

    #[tokio::test]
    async fn smtp_urls_name_a_tls_mode_and_never_hold_credentials() {
        for ok in [
            "smtp://mail.example.com",
            "smtp://mail.example.com:2525?tls=required",
            "smtp://127.0.0.1:25?tls=opportunistic",
            "smtps://mail.example.com:465",
        ] {
            assert!(with_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://mail.example.com",
            "smtp://mail.example.com?tls=sometimes",
            "smtps://mail.example.com?tls=required",
            "not a url",
        ] {
            assert!(with_url(bad).is_err(), "{bad}");
        }
        let e = with_url("smtp://user:hunter2@mail.example.com")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("username_env") && !e.contains("hunter2"), "{e}");
        let e = Mailer::new(&EmailSettings {
            smtp_url: Some("smtp://mail.example.com".into()),
            username_env: Some("SWITCHYARD_TEST_UNSET_SMTP_USER".into()),
            password_env: Some("SWITCHYARD_TEST_UNSET_SMTP_PASSWORD".into()),
            ..EmailSettings::default()
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("SWITCHYARD_TEST_UNSET_SMTP_USER"), "{e}");
        assert!(
            Mailer::new(&EmailSettings {
                from: "not an address".into(),
                ..EmailSettings::default()
            })
            .is_err()
        );
    }

    #[test]
    fn a_servers_answer_is_kept_as_one_short_line() {
        assert_eq!(
            bounded("550 5.1.1\r\n  no\tsuch box"),
            "550 5.1.1 no such box"
        );
        let long = bounded(&"x".repeat(1000));
        assert_eq!(long.chars().count(), SERVER_TEXT_MAX + 1);
    }
}
