//! An SMTP sink: a mail server on `127.0.0.1:0` that keeps what it is sent.
//!
//! It speaks the server side of RFC 5321 as far as a submitting client
//! needs: `EHLO`/`HELO`, `MAIL FROM`, `RCPT TO`, `DATA` (with the
//! dot-unstuffing of §4.5.2), `RSET`, `NOOP`, `QUIT`, and accepts any
//! `AUTH PLAIN` or `AUTH LOGIN` (RFC 4954, RFC 4616), keeping the
//! credentials so a test can check them. It offers no `STARTTLS`, so a
//! client that only prefers TLS goes on in the clear.
//!
//! [`SmtpSink::fail_next`] makes it answer the next `RCPT TO` or the end of
//! the next `DATA` with a temporary (4xx) or permanent (5xx) error, so a
//! test can drive retries and give-ups. [`Received`] parses what came
//! (headers, the parts of a MIME multipart, quoted-printable and base64
//! bodies) enough to read a message as a person would.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Where a [`Fault`] strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The reply to `RCPT TO`.
    Rcpt,
    /// The reply after the message's final `.`.
    Data,
}

/// An error reply the sink gives once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `451 4.3.0`: try again later (RFC 5321 §4.2.1, 4yz).
    Temporary,
    /// `550 5.1.1`: the mailbox does not exist (5yz, never worth a retry).
    Permanent,
}

impl Fault {
    fn reply(self) -> &'static str {
        match self {
            Fault::Temporary => "451 4.3.0 Mail server temporarily busy, try again later",
            Fault::Permanent => "550 5.1.1 No such mailbox here",
        }
    }
}

/// One message as the sink took it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope: `MAIL FROM` and each `RCPT TO`, without angle brackets.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message as sent (RFC 5322), dot-unstuffed, CRLF line ends.
    pub data: String,
    /// The `(user, password)` of the session's `AUTH`, if it had one.
    pub auth: Option<(String, String)>,
}

#[derive(Default)]
struct Shared {
    messages: Mutex<Vec<Received>>,
    faults: Mutex<VecDeque<(Stage, Fault)>>,
    arrived: Notify,
}

impl Shared {
    fn take_fault(&self, stage: Stage) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap();
        let i = faults.iter().position(|(s, _)| *s == stage)?;
        faults.remove(i).map(|(_, f)| f)
    }
}

/// The running sink; it stops when dropped.
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = session(stream, &s).await;
                });
            }
        });
        Self { addr, shared, task }
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every message so far, oldest first.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.messages.lock().unwrap().clone()
    }

    /// Answers the next `stage` with `fault`, once. Several queue up.
    pub fn fail_next(&self, stage: Stage, fault: Fault) {
        self.shared.faults.lock().unwrap().push_back((stage, fault));
    }

    /// The messages once there are at least `n`, or an error saying how
    /// many came within `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<Received>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let got = self.messages();
            if got.len() >= n {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                anyhow::bail!(
                    "the SMTP sink got {} message(s) within {timeout:?}, not {n}",
                    got.len()
                );
            }
        }
    }
}

/// One client connection, until `QUIT` or the client goes.
async fn session(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let reply = |mut text: String| {
        text.push_str("\r\n");
        text
    };
    write
        .write_all(reply("220 127.0.0.1 ESMTP sink ready".into()).as_bytes())
        .await?;
    let mut auth: Option<(String, String)> = None;
    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end_matches(['\r', '\n']).to_string();
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let answer = match verb.as_str() {
            "EHLO" => "250-127.0.0.1 greets you\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-SIZE 10485760\r\n250 AUTH PLAIN LOGIN".to_string(),
            "HELO" => "250 127.0.0.1".into(),
            "NOOP" => "250 2.0.0 OK".into(),
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                "250 2.0.0 OK".into()
            }
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            "AUTH" => {
                let mut words = command.split_whitespace().skip(1);
                let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
                let initial = words.next().map(str::to_string);
                let mut ask = async |prompt: &str| -> std::io::Result<String> {
                    write.write_all(reply(format!("334 {prompt}")).as_bytes()).await?;
                    let mut l = String::new();
                    lines.read_line(&mut l).await?;
                    Ok(l.trim_end_matches(['\r', '\n']).to_string())
                };
                let decode = |s: &str| {
                    String::from_utf8_lossy(&STANDARD.decode(s).unwrap_or_default()).into_owned()
                };
                match mechanism.as_str() {
                    "PLAIN" => {
                        let response = match initial {
                            Some(i) => i,
                            None => ask("").await?,
                        };
                        // authzid NUL authcid NUL passwd (RFC 4616 §2).
                        let plain = decode(&response);
                        let mut fields = plain.split('\0').skip(1);
                        auth = Some((
                            fields.next().unwrap_or("").to_string(),
                            fields.next().unwrap_or("").to_string(),
                        ));
                        "235 2.7.0 Authentication successful".into()
                    }
                    "LOGIN" => {
                        let user = match initial {
                            Some(i) => decode(&i),
                            None => decode(&ask("VXNlcm5hbWU6").await?),
                        };
                        let password = decode(&ask("UGFzc3dvcmQ6").await?);
                        auth = Some((user, password));
                        "235 2.7.0 Authentication successful".into()
                    }
                    _ => "504 5.5.4 Unrecognized authentication type".into(),
                }
            }
            "MAIL" => {
                mail_from = Some(path_of(&command));
                rcpt_to.clear();
                "250 2.1.0 OK".into()
            }
            "RCPT" if mail_from.is_none() => "503 5.5.1 MAIL first".into(),
            "RCPT" => match shared.take_fault(Stage::Rcpt) {
                Some(fault) => fault.reply().into(),
                None => {
                    rcpt_to.push(path_of(&command));
                    "250 2.1.5 OK".into()
                }
            },
            "DATA" if rcpt_to.is_empty() => "503 5.5.1 RCPT first".into(),
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    if lines.read_line(&mut l).await? == 0 {
                        return Ok(());
                    }
                    let content = l.trim_end_matches(['\r', '\n']);
                    if content == "." {
                        break;
                    }
                    // RFC 5321 §4.5.2: a leading dot was doubled by the client.
                    let content = content.strip_prefix('.').unwrap_or(content);
                    data.push_str(content);
                    data.push_str("\r\n");
                }
                let answer = match shared.take_fault(Stage::Data) {
                    Some(fault) => fault.reply().to_string(),
                    None => {
                        shared.messages.lock().unwrap().push(Received {
                            mail_from: mail_from.clone().unwrap_or_default(),
                            rcpt_to: rcpt_to.clone(),
                            data,
                            auth: auth.clone(),
                        });
                        shared.arrived.notify_waiters();
                        "250 2.0.0 OK queued".to_string()
                    }
                };
                mail_from = None;
                rcpt_to.clear();
                answer
            }
            _ => "502 5.5.2 Command not implemented".into(),
        };
        write.write_all(reply(answer).as_bytes()).await?;
    }
}

/// The address in `MAIL FROM:<a@b> SIZE=…` or `RCPT TO:<a@b>`.
fn path_of(command: &str) -> String {
    let after = command.split_once(':').map(|(_, r)| r).unwrap_or("");
    let after = after.trim_start();
    match after.strip_prefix('<').and_then(|r| r.split_once('>')) {
        Some((path, _)) => path.to_string(),
        None => after.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// A MIME entity: unfolded headers and the raw body.
#[derive(Debug, Clone)]
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Part {
    /// Parses an RFC 5322 message or a MIME body part.
    pub fn parse(raw: &str) -> Self {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                // Folded (RFC 5322 §2.2.3): part of the header above.
                if let Some((_, v)) = headers.last_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        Self {
            headers,
            body: body.to_string(),
        }
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type, lower-cased, without parameters.
    pub fn content_type(&self) -> String {
        self.header("Content-Type")
            .unwrap_or("text/plain")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }

    /// A parameter of `Content-Type` (`boundary`, `charset`).
    pub fn param(&self, name: &str) -> Option<String> {
        self.header("Content-Type")?
            .split(';')
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
    }

    /// The body with its `Content-Transfer-Encoding` undone.
    pub fn decoded(&self) -> String {
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or("7bit")
            .to_ascii_lowercase();
        match encoding.as_str() {
            "quoted-printable" => quoted_printable(&self.body),
            "base64" => {
                let joined: String = self.body.split_whitespace().collect();
                String::from_utf8_lossy(&STANDARD.decode(joined).unwrap_or_default()).into_owned()
            }
            _ => self.body.clone(),
        }
    }

    /// The leaf parts, depth first (itself, when it is not multipart).
    pub fn leaves(&self) -> Vec<Part> {
        if !self.content_type().starts_with("multipart/") {
            return vec![self.clone()];
        }
        let Some(boundary) = self.param("boundary") else {
            return vec![];
        };
        let delimiter = format!("--{boundary}");
        let mut out = Vec::new();
        for chunk in self.body.split(&delimiter).skip(1) {
            if chunk.starts_with("--") {
                break;
            }
            let chunk = chunk.strip_prefix('\n').unwrap_or(chunk);
            let chunk = chunk.strip_suffix('\n').unwrap_or(chunk);
            out.extend(Part::parse(chunk).leaves());
        }
        out
    }
}

impl Received {
    /// The message, parsed.
    pub fn parsed(&self) -> Part {
        Part::parse(&self.data)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.parsed().header(name).map(str::to_string)
    }

    /// The decoded body of the first leaf part of type `media_type`.
    pub fn part(&self, media_type: &str) -> Option<String> {
        self.parsed()
            .leaves()
            .into_iter()
            .find(|p| p.content_type() == media_type)
            .map(|p| p.decoded())
    }

    /// The first reset link in the message.
    pub fn reset_link(&self) -> Option<String> {
        reset_link(&self.data)
    }
}

/// Undoes quoted-printable (RFC 2045 §6.7): `=XX` octets and `=` soft line
/// breaks.
pub fn quoted_printable(body: &str) -> String {
    let body = body.replace("\r\n", "\n");
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            if bytes.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if let Some(hex) = body.get(i + 1..i + 3)
                && let Ok(b) = u8::from_str_radix(hex, 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first `http(s)://…/login/reset?token=…` link in an RFC 5322
/// message, looked for in each decoded text part (so a link split by
/// quoted-printable's soft breaks is found whole).
pub fn reset_link(message: &str) -> Option<String> {
    let parsed = Part::parse(message);
    parsed
        .leaves()
        .iter()
        .map(Part::decoded)
        .find_map(|text| find_reset_link(&text))
}

fn find_reset_link(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(start) = rest.find("http") {
        let candidate: String = rest[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '<' | '>'))
            .collect();
        let candidate = candidate.replace("&amp;", "&");
        if (candidate.starts_with("http://") || candidate.starts_with("https://"))
            && candidate.contains("/login/reset?token=")
        {
            return Some(candidate);
        }
        rest = &rest[start + 4..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_joins_soft_breaks_and_decodes_octets() {
        assert_eq!(
            quoted_printable(
                "https://id.example.com/login/reset?token=3DabcDE=\r\nF_-x\r\nd=C3=A9j=C3=A0"
            ),
            "https://id.example.com/login/reset?token=abcDEF_-x\nd\u{e9}j\u{e0}"
        );
    }

    #[test]
    fn a_link_is_found_in_a_quoted_printable_multipart() {
        let message = "From: a@example.com\r\nContent-Type: multipart/alternative;\r\n boundary=\"XYZ\"\r\n\r\n--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGo to http://127.0.0.1:1/login/reset?token=3Dab=\r\ncd now\r\n--XYZ\r\nContent-Type: text/html\r\n\r\n<a href=\"x\">x</a>\r\n--XYZ--\r\n";
        assert_eq!(
            reset_link(message).as_deref(),
            Some("http://127.0.0.1:1/login/reset?token=abcd")
        );
        let parsed = Part::parse(message);
        assert_eq!(parsed.leaves().len(), 2);
        assert_eq!(parsed.leaves()[1].content_type(), "text/html");
    }

    #[test]
    fn envelope_paths_lose_their_brackets_and_parameters() {
        assert_eq!(path_of("MAIL FROM:<a@b.c> SIZE=100"), "a@b.c");
        assert_eq!(path_of("RCPT TO: <x@y.z>"), "x@y.z");
    }
}
