//! Rendering a [`Message`]: its words from `templates/email/strings.toml`,
//! laid out by a plain-text and an HTML template.
//!
//! Like the pages ([`crate::templates`]), the templates are compiled into
//! the binary and parsed once. The HTML ones are auto-escaped (minijinja
//! escapes by the `.html` name), so an address or host can add no markup.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use anyhow::Context;
use minijinja::Environment;
use serde::Deserialize;

use super::Message;

/// A message ready to send: a subject and the two alternatives of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// What a message says beyond its fixed words.
#[derive(Debug, Clone)]
pub struct Vars<'a> {
    /// The link the message exists for; holds a live token.
    pub link: &'a str,
    /// How long the link works.
    pub ttl_secs: u64,
    /// The host users sign in at (the issuer's).
    pub issuer_host: &'a str,
    /// The recipient's address.
    pub email: &'a str,
}

/// `strings.toml`, parsed.
#[derive(Debug, Deserialize)]
struct Strings {
    lang: String,
    units: Units,
    password_reset: BTreeMap<String, String>,
    invitation: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Units {
    minutes: String,
    hours: String,
    days: String,
}

/// Parsed once: constants of the binary, like the page templates.
static STRINGS: LazyLock<Strings> = LazyLock::new(|| {
    toml::from_str(include_str!("../../templates/email/strings.toml"))
        .expect("strings.toml is checked by the test suite")
});

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        (
            "layout.txt",
            include_str!("../../templates/email/layout.txt"),
        ),
        (
            "layout.html",
            include_str!("../../templates/email/layout.html"),
        ),
        (
            "password_reset.txt",
            include_str!("../../templates/email/password_reset.txt"),
        ),
        (
            "password_reset.html",
            include_str!("../../templates/email/password_reset.html"),
        ),
        (
            "invitation.txt",
            include_str!("../../templates/email/invitation.txt"),
        ),
        (
            "invitation.html",
            include_str!("../../templates/email/invitation.html"),
        ),
    ] {
        env.add_template(name, source)
            .expect("email templates are checked by the test suite");
    }
    env
});

impl Message {
    /// The name of its templates and of its section of `strings.toml`.
    fn name(self) -> &'static str {
        match self {
            Message::PasswordReset => "password_reset",
            Message::Invitation => "invitation",
        }
    }

    fn strings(self) -> &'static BTreeMap<String, String> {
        match self {
            Message::PasswordReset => &STRINGS.password_reset,
            Message::Invitation => &STRINGS.invitation,
        }
    }
}

/// A lifetime in the largest unit that words it exactly, or else the
/// nearest whole minutes (a reset link's 30 minutes, an invitation's 14
/// days).
fn worded_ttl(env: &Environment, secs: u64) -> anyhow::Result<String> {
    let (n, unit) = if secs >= 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, &STRINGS.units.days)
    } else if secs >= 3_600 && secs.is_multiple_of(3_600) {
        (secs / 3_600, &STRINGS.units.hours)
    } else {
        (secs.div_ceil(60).max(1), &STRINGS.units.minutes)
    };
    Ok(env.render_str(unit, minijinja::context! { n })?)
}

/// Renders `message`.
pub fn render(message: Message, vars: &Vars) -> anyhow::Result<Rendered> {
    let env = &*TEMPLATES;
    let expires = worded_ttl(env, vars.ttl_secs)?;
    let ctx = minijinja::context! {
        issuer_host => vars.issuer_host,
        email => vars.email,
        expires => expires,
    };
    // The strings are templates too, rendered as plain text; the HTML
    // template escapes them when it inserts them.
    let mut s = BTreeMap::new();
    for (key, template) in message.strings() {
        let text = env
            .render_str(template, &ctx)
            .with_context(|| format!("strings.toml: {}.{key}", message.name()))?;
        s.insert(key.as_str(), text);
    }
    let subject = s
        .get("subject")
        .cloned()
        .with_context(|| format!("strings.toml: {} has no subject", message.name()))?;
    let name = message.name();
    let text = env
        .get_template(&format!("{name}.txt"))?
        .render(minijinja::context! { s => &s, link => vars.link })
        .with_context(|| format!("{name}.txt"))?;
    // minijinja's HTML escaping also turns `/` into `&#x2f;`; the link is
    // escaped here instead, for what HTML needs (&, <, >, quotes), so it
    // reads the same in the markup as in the text part.
    let link = minijinja::Value::from_safe_string(html_escape(vars.link));
    let html = env
        .get_template(&format!("{name}.html"))?
        .render(minijinja::context! { s => &s, link => link, lang => &STRINGS.lang })
        .with_context(|| format!("{name}.html"))?;
    Ok(Rendered {
        // A header is one line (RFC 5322 §2.2): whatever a translation
        // puts in, the subject stays one.
        subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
        text,
        html,
    })
}

/// `text` safe inside an HTML attribute or element.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(ttl_secs: u64) -> Vars<'static> {
        Vars {
            link: "https://id.example.com/login/reset?token=abc&x=<y>",
            ttl_secs,
            issuer_host: "id.example.com",
            email: "o'brien+<b>@example.com",
        }
    }

    #[test]
    fn every_message_renders_its_strings_and_escapes_html() {
        for message in [Message::PasswordReset, Message::Invitation] {
            let r = render(message, &vars(1800)).unwrap();
            assert!(r.subject.contains("id.example.com"), "{}", r.subject);
            assert!(!r.subject.contains('\n'));
            assert!(
                r.text
                    .contains("https://id.example.com/login/reset?token=abc&x=<y>")
            );
            assert!(r.text.contains("o'brien+<b>@example.com"));
            assert!(r.html.contains("&lt;b&gt;"), "{}", r.html);
            assert!(!r.html.contains("<b>"));
            assert!(
                r.html
                    .contains("\"https://id.example.com/login/reset?token=abc&amp;x=&lt;y&gt;\"")
            );
            assert!(r.html.contains("lang=\"en\""));
        }
    }

    #[test]
    fn lifetimes_are_worded_in_the_largest_exact_unit() {
        let env = &*TEMPLATES;
        assert_eq!(worded_ttl(env, 1800).unwrap(), "30 minutes");
        assert_eq!(worded_ttl(env, 60).unwrap(), "1 minute");
        assert_eq!(worded_ttl(env, 90).unwrap(), "2 minutes");
        assert_eq!(worded_ttl(env, 7200).unwrap(), "2 hours");
        assert_eq!(worded_ttl(env, 14 * 86_400).unwrap(), "14 days");
        assert_eq!(worded_ttl(env, 86_400).unwrap(), "1 day");
    }
}
