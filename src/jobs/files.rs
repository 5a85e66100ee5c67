//! `switchyard import FILE`: users from export files, streamed.
//!
//! Formats, as each vendor documents its export or import file:
//! - `auth0-export`: NDJSON as Auth0's users-export job writes it (gzipped
//!   or not), and as a password-hash export ticket delivers it
//!   (`_id.$oid`, `passwordHash`); `auth0|…` ids are kept as they are.
//! - `auth0-bulk`: Auth0's bulk-import JSON array, with `custom_password_hash`
//!   or `password_hash`.
//! - `okta-csv`, `csv`: one user per row, columns named as Okta's profile
//!   (`login`, `firstName`, …) or as the local fields (`given_name`, …).
//! - `cognito-csv`: Cognito's user-import CSV columns, plus the `sub` the
//!   applications stored.
//! - `keycloak`: a realm export (`{"users": [...]}`), with its credentials.
//!
//! The file is read on a blocking thread a record at a time (a JSON array is
//! split element by element, never parsed whole), so memory stays flat
//! whatever the file's size; a bad record (malformed, too large, without an
//! id, with a hash format nobody can verify) is reported with its line and
//! skipped, never written in part.

use std::io::{BufRead, Read};

use serde_json::{Map, Value};

use crate::password::imported;
use crate::store::jobs::Rejected;
use crate::store::record::{Claims, Record};
use crate::upstream::management::mapping::{self, truthy};
use crate::upstream::provider::ProviderDef;

/// Larger records are refused (an Auth0 user is at most a few kilobytes;
/// metadata is capped at 16 KB per field there).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Auth0Export,
    Auth0Bulk,
    OktaCsv,
    Csv,
    CognitoCsv,
    Keycloak,
}

impl Format {
    /// The provider the users of this format come from.
    pub fn provider(self) -> Option<&'static str> {
        match self {
            Self::Auth0Export | Self::Auth0Bulk => Some("auth0"),
            Self::OktaCsv => Some("okta"),
            Self::CognitoCsv => Some("cognito"),
            Self::Keycloak => Some("keycloak"),
            Self::Csv => None,
        }
    }

    /// The name `--format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auth0Export => "auth0-export",
            Self::Auth0Bulk => "auth0-bulk",
            Self::OktaCsv => "okta-csv",
            Self::Csv => "csv",
            Self::CognitoCsv => "cognito-csv",
            Self::Keycloak => "keycloak",
        }
    }

    /// Guesses the format from the file name and its first bytes.
    pub fn detect(path: &str, head: &[u8]) -> Option<Self> {
        let name = path.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let first = head.iter().find(|b| !b.is_ascii_whitespace());
        if name.ends_with(".ndjson") || name.ends_with(".jsonl") {
            return Some(Self::Auth0Export);
        }
        if name.ends_with(".json") {
            return match first {
                Some(b'[') => Some(Self::Auth0Bulk),
                Some(b'{') if head.windows(7).any(|w| w == b"\"realm\"") => Some(Self::Keycloak),
                Some(b'{') => Some(Self::Auth0Export),
                _ => None,
            };
        }
        if name.ends_with(".csv") {
            let header = String::from_utf8_lossy(head);
            let header = header.lines().next().unwrap_or_default();
            return Some(if header.contains("cognito:username") {
                Self::CognitoCsv
            } else if header.contains("firstName") || header.contains("login") {
                Self::OktaCsv
            } else {
                Self::Csv
            });
        }
        None
    }
}

/// One item of a file: a record, or why a stretch of it could not be one.
/// (The same item a Management API page gives.)
pub use crate::upstream::management::Item;

fn rejected(line: u64, user_id: Option<String>, reason: impl Into<String>) -> Rejected {
    Rejected {
        line: Some(line),
        user_id,
        reason: reason.into(),
    }
}

/// Opens a file (gunzipping `.gz`) as a buffered reader.
pub fn open(path: &str) -> std::io::Result<Box<dyn BufRead + Send>> {
    let file = std::fs::File::open(path)?;
    let reader: Box<dyn Read + Send> = if path.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, reader)))
}

/// The records of `reader` in `format`, one at a time.
pub fn records(
    reader: Box<dyn BufRead + Send>,
    format: Format,
) -> Result<Box<dyn Iterator<Item = Item> + Send>, String> {
    Ok(match format {
        Format::Auth0Export => {
            let def = ProviderDef::load("auth0")?;
            Box::new(Lines::new(reader).map(move |item| {
                let (line, bytes) = item?;
                let raw = parse_object(line, &bytes)?;
                auth0_record(&def, line, raw)
            }))
        }
        Format::Auth0Bulk => Box::new(JsonElements::new(reader, None).map(|item| {
            let (line, bytes) = item?;
            auth0_bulk_record(line, parse_object(line, &bytes)?)
        })),
        Format::Keycloak => {
            let def = ProviderDef::load("keycloak")?;
            Box::new(JsonElements::new(reader, Some("users")).map(move |item| {
                let (line, bytes) = item?;
                keycloak_record(&def, line, parse_object(line, &bytes)?)
            }))
        }
        Format::OktaCsv | Format::Csv | Format::CognitoCsv => {
            Box::new(csv_records(reader, format)?)
        }
    })
}

fn parse_object(line: u64, bytes: &[u8]) -> Result<Value, Rejected> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(rejected(line, None, "not a JSON object")),
        Err(e) => Err(rejected(line, None, format!("malformed JSON: {e}"))),
    }
}

fn id_of(raw: &Value, key: &str) -> Option<String> {
    raw.get(key).and_then(Value::as_str).map(String::from)
}

/// A hash the migration can verify, with its algorithm; `Err` otherwise.
fn checked_hash(line: u64, id: &str, hash: &str) -> Result<(String, String), Rejected> {
    match imported::algorithm_of(hash) {
        "unknown" => Err(rejected(
            line,
            Some(id.to_string()),
            "unknown password hash format",
        )),
        algorithm => Ok((hash.to_string(), algorithm.to_string())),
    }
}

fn auth0_record(def: &ProviderDef, line: u64, mut raw: Value) -> Result<Record, Rejected> {
    // A hash-export ticket's lines carry the MongoDB `_id` rather than
    // `user_id`; the user's id is `auth0|` + that id.
    if raw.get("user_id").is_none()
        && let Some(oid) = raw.pointer("/_id/$oid").and_then(Value::as_str)
    {
        raw["user_id"] = Value::String(format!("auth0|{oid}"));
    }
    let m = def
        .management
        .as_ref()
        .expect("auth0 has a management section");
    // Neither the hash nor the export's own `_id` belongs in the profile.
    let hash = raw.as_object_mut().and_then(|o| {
        o.remove("_id");
        o.remove("passwordHash")
    });
    let mut record = mapping::map_record(def, m, raw).map_err(|e| rejected(line, None, e))?;
    record.line = Some(line);
    if let Some(hash) = hash.as_ref().and_then(Value::as_str) {
        record.password = Some(checked_hash(line, &record.id, hash)?);
    }
    Ok(record)
}

/// Auth0's bulk-import schema: `user_id` is the id without the connection
/// strategy, which Auth0 prepends (`auth0|`).
fn auth0_bulk_record(line: u64, raw: Value) -> Result<Record, Rejected> {
    let Some(bare) = id_of(&raw, "user_id") else {
        return Err(rejected(
            line,
            None,
            "no user_id: without it the user would get a new id and lose their sub",
        ));
    };
    let id = if bare.contains('|') {
        bare
    } else {
        format!("auth0|{bare}")
    };
    let mut r = Record::new(id);
    r.line = Some(line);
    let text = |k: &str| raw.get(k).and_then(Value::as_str).map(String::from);
    r.profile.email = text("email");
    r.profile.email_verified = truthy(raw.get("email_verified"));
    r.profile.username = text("username");
    r.profile.name = text("name");
    r.profile.given_name = text("given_name");
    r.profile.family_name = text("family_name");
    r.profile.nickname = text("nickname");
    r.profile.picture = text("picture");
    r.blocked = truthy(raw.get("blocked"));
    for (k, field) in [
        ("user_metadata", &mut r.user_metadata),
        ("app_metadata", &mut r.app_metadata),
    ] {
        if let Some(Value::Object(m)) = raw.get(k) {
            *field = m.clone();
        }
    }
    r.claims = Claims::new(&r.standard_claims());
    let hash = match (raw.get("custom_password_hash"), text("password_hash")) {
        (Some(custom), _) => Some(custom_hash(line, &r.id, custom)?),
        (None, Some(bcrypt)) => Some(checked_hash(line, &r.id, &bcrypt)?),
        (None, None) => None,
    };
    r.password = hash;
    Ok(r)
}

/// `custom_password_hash`: the algorithms whose hashes are self-describing
/// (PHC strings, bcrypt) are kept; the salted digests (md5, sha*, hmac,
/// ldap) would need Auth0's salt-position rules and are refused by name.
fn custom_hash(line: u64, id: &str, custom: &Value) -> Result<(String, String), Rejected> {
    let algorithm = custom
        .get("algorithm")
        .and_then(Value::as_str)
        .unwrap_or("");
    let value = custom
        .pointer("/hash/value")
        .and_then(Value::as_str)
        .unwrap_or("");
    match algorithm {
        "argon2" | "bcrypt" | "pbkdf2" => checked_hash(line, id, value),
        other => Err(rejected(
            line,
            Some(id.to_string()),
            format!("custom_password_hash algorithm {other:?} cannot be verified here"),
        )),
    }
}

fn keycloak_record(def: &ProviderDef, line: u64, mut raw: Value) -> Result<Record, Rejected> {
    let m = def
        .management
        .as_ref()
        .expect("keycloak has a management section");
    let mut take = |field: &str| raw.get_mut(field).map(Value::take);
    let (linked, credentials) = (take("federatedIdentities"), take("credentials"));
    let mut r = mapping::map_record(def, m, raw).map_err(|e| rejected(line, None, e))?;
    r.line = Some(line);
    if let Some(Value::Array(linked)) = linked {
        for l in linked {
            if let (Some(p), Some(u)) = (
                l.get("identityProvider").and_then(Value::as_str),
                l.get("userId").and_then(Value::as_str),
            ) {
                r.add_identity(format!("{p}|{u}"));
            }
        }
    }
    let password = credentials
        .as_ref()
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type") == Some(&Value::from("password")))
        });
    if let Some(c) = password {
        let secret = c.get("secretData").and_then(Value::as_str).unwrap_or("");
        let data = c
            .get("credentialData")
            .and_then(Value::as_str)
            .unwrap_or("");
        let algorithm = serde_json::from_str::<Value>(data)
            .ok()
            .and_then(|d| d.get("algorithm").and_then(Value::as_str).map(String::from))
            .unwrap_or_default();
        if !matches!(
            algorithm.as_str(),
            "pbkdf2-sha256" | "pbkdf2-sha512" | "pbkdf2"
        ) {
            return Err(rejected(
                line,
                Some(r.id.clone()),
                format!("Keycloak credential algorithm {algorithm:?} cannot be verified here"),
            ));
        }
        let stored = imported::keycloak_credential(secret, data).ok_or_else(|| {
            rejected(
                line,
                Some(r.id.clone()),
                "malformed Keycloak password credential",
            )
        })?;
        r.password = Some((stored, "pbkdf2".into()));
    }
    Ok(r)
}

/// Column names accepted for each field, compared case-insensitively:
/// the local names, Okta's profile names, Cognito's attribute names.
const CSV_COLUMNS: &[(&str, &[&str])] = &[
    ("id", &["id", "user_id", "sub", "okta id"]),
    ("email", &["email", "profile.email"]),
    ("email_verified", &["email_verified", "emailverified"]),
    (
        "username",
        &[
            "username",
            "login",
            "cognito:username",
            "preferred_username",
        ],
    ),
    ("name", &["name", "displayname", "display_name"]),
    ("given_name", &["given_name", "firstname", "first_name"]),
    ("family_name", &["family_name", "lastname", "last_name"]),
    ("nickname", &["nickname"]),
    ("picture", &["picture"]),
    ("phone_number", &["phone_number", "mobilephone", "phone"]),
    ("blocked", &["blocked"]),
    ("status", &["status"]),
    ("enabled", &["enabled"]),
    ("password_hash", &["password_hash", "passwordhash"]),
    ("user_metadata", &["user_metadata"]),
    ("app_metadata", &["app_metadata"]),
];

fn csv_records(
    reader: Box<dyn BufRead + Send>,
    format: Format,
) -> Result<impl Iterator<Item = Item> + Send, String> {
    let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers = csv
        .headers()
        .map_err(|e| format!("cannot read the CSV header: {e}"))?
        .clone();
    let mut columns: Map<String, Value> = Map::new();
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim().to_ascii_lowercase();
        if let Some((field, _)) = CSV_COLUMNS
            .iter()
            .find(|(_, names)| names.contains(&h.as_str()))
        {
            columns.entry(field.to_string()).or_insert(Value::from(i));
        }
    }
    let id_column = if format == Format::CognitoCsv {
        "sub"
    } else {
        "id"
    };
    if !columns.contains_key("id")
        || (format == Format::CognitoCsv && !headers.iter().any(|h| h == "sub"))
    {
        return Err(format!(
            "the CSV header has no {id_column} column: without the upstream id users would lose their sub"
        ));
    }
    let extra: Vec<(usize, String)> = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| h.starts_with("custom:"))
        .map(|(i, h)| (i, h.to_string()))
        .collect();
    Ok(csv.into_byte_records().map(move |row| {
        let row = row.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            rejected(line, None, format!("malformed CSV row: {e}"))
        })?;
        let line = row.position().map(|p| p.line()).unwrap_or(0);
        if row.as_slice().len() > MAX_RECORD_BYTES {
            return Err(rejected(line, None, "record larger than 1 MiB"));
        }
        let cell = |field: &str| {
            columns
                .get(field)
                .and_then(Value::as_u64)
                .and_then(|i| row.get(i as usize))
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let Some(id) = cell("id") else {
            return Err(rejected(line, None, format!("no {id_column}")));
        };
        let mut r = Record::new(id);
        r.line = Some(line);
        r.profile.email = cell("email");
        r.profile.email_verified = truthy(cell("email_verified").map(Value::String).as_ref());
        r.profile.username = cell("username");
        r.profile.name = cell("name");
        r.profile.given_name = cell("given_name");
        r.profile.family_name = cell("family_name");
        r.profile.nickname = cell("nickname");
        r.profile.picture = cell("picture");
        r.profile.phone_number = cell("phone_number");
        r.blocked = truthy(cell("blocked").map(Value::String).as_ref())
            || cell("status").is_some_and(|s| {
                matches!(s.as_str(), "SUSPENDED" | "LOCKED_OUT" | "DEPROVISIONED")
            })
            || cell("enabled").is_some_and(|s| s.eq_ignore_ascii_case("false"));
        for (field, target) in [
            ("user_metadata", &mut r.user_metadata),
            ("app_metadata", &mut r.app_metadata),
        ] {
            if let Some(text) = cell(field) {
                match serde_json::from_str(&text) {
                    Ok(Value::Object(m)) => *target = m,
                    _ => {
                        return Err(rejected(
                            line,
                            Some(r.id.clone()),
                            format!("{field} is not a JSON object"),
                        ));
                    }
                }
            }
        }
        let mut claims = r.standard_claims();
        if format == Format::CognitoCsv {
            if let Some(u) = &r.profile.username {
                claims.insert("cognito:username".into(), Value::String(u.clone()));
            }
            for (i, name) in &extra {
                if let Some(v) = row.get(*i).filter(|v| !v.is_empty()) {
                    claims.insert(
                        name.clone(),
                        Value::String(String::from_utf8_lossy(v).into()),
                    );
                }
            }
        }
        r.claims = Claims::new(&claims);
        if let Some(hash) = cell("password_hash") {
            r.password = Some(checked_hash(line, &r.id, &hash)?);
        }
        Ok(r)
    }))
}

/// Reads `reader` into `buf` up to the next newline, keeping at most
/// `MAX_RECORD_BYTES` (the rest of a longer line is read and dropped).
/// Returns whether anything was read, and whether the line was cut.
fn read_line_bounded(reader: &mut dyn BufRead, buf: &mut Vec<u8>) -> std::io::Result<(bool, bool)> {
    buf.clear();
    let (mut any, mut cut) = (false, false);
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok((any, cut));
        }
        any = true;
        let (take, newline) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = MAX_RECORD_BYTES.saturating_sub(buf.len());
        if take > room {
            cut = true;
        }
        buf.extend_from_slice(&available[..take.min(room)]);
        reader.consume(take);
        if newline {
            return Ok((true, cut));
        }
    }
}

/// NDJSON lines: `(line number, bytes)`, blank lines skipped.
pub struct Lines {
    reader: Box<dyn BufRead + Send>,
    line: u64,
    buf: Vec<u8>,
}

impl Lines {
    pub fn new(reader: Box<dyn BufRead + Send>) -> Self {
        Self {
            reader,
            line: 0,
            buf: Vec::new(),
        }
    }
}

impl Iterator for Lines {
    type Item = Result<(u64, Vec<u8>), Rejected>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (any, cut) = match read_line_bounded(&mut *self.reader, &mut self.buf) {
                Ok(r) => r,
                Err(e) => {
                    return Some(Err(rejected(
                        self.line + 1,
                        None,
                        format!("read error: {e}"),
                    )));
                }
            };
            if !any {
                return None;
            }
            self.line += 1;
            if cut {
                return Some(Err(rejected(self.line, None, "record larger than 1 MiB")));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(Ok((self.line, std::mem::take(&mut self.buf))));
        }
    }
}

/// The elements of one JSON array, read a byte at a time without parsing
/// the whole document: the top-level array, or the array under a top-level
/// key (`users` in a Keycloak realm export). Each element comes with the
/// line it starts on; an element larger than `MAX_RECORD_BYTES` is reported
/// and skipped.
pub struct JsonElements {
    reader: Box<dyn BufRead + Send>,
    key: Option<&'static str>,
    line: u64,
    depth: usize,
    in_string: bool,
    escape: bool,
    /// The depth inside the target array, once found.
    target: Option<usize>,
    /// The last string seen at depth 1 (a key of the top-level object).
    string: Vec<u8>,
    last_key: Vec<u8>,
    finished: bool,
}

impl JsonElements {
    pub fn new(reader: Box<dyn BufRead + Send>, key: Option<&'static str>) -> Self {
        Self {
            reader,
            key,
            line: 1,
            depth: 0,
            in_string: false,
            escape: false,
            target: None,
            string: Vec::new(),
            last_key: Vec::new(),
            finished: false,
        }
    }

    fn fail(&mut self, reason: &str) -> Option<<Self as Iterator>::Item> {
        self.finished = true;
        Some(Err(rejected(self.line, None, reason)))
    }
}

impl Iterator for JsonElements {
    type Item = Result<(u64, Vec<u8>), Rejected>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        // The element being captured: start line, bytes, too large.
        let mut element: Option<(u64, Vec<u8>, bool)> = None;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) => return self.fail(&format!("read error: {e}")),
            };
            if available.is_empty() {
                return match (element, self.target) {
                    (Some((line, ..)), _) => {
                        self.finished = true;
                        Some(Err(rejected(
                            line,
                            None,
                            "the file ends inside this record",
                        )))
                    }
                    (None, None) => self.fail(match self.key {
                        Some(_) => "no \"users\" array in the file",
                        None => "the file is not a JSON array",
                    }),
                    (None, Some(_)) => self.fail("the file ends before the array is closed"),
                };
            }
            let mut used = 0;
            let mut result = None;
            let mut error = None;
            for &b in available {
                used += 1;
                if b == b'\n' {
                    self.line += 1;
                }
                if let Some((_, bytes, too_large)) = &mut element {
                    if bytes.len() < MAX_RECORD_BYTES {
                        bytes.push(b);
                    } else {
                        *too_large = true;
                    }
                }
                if self.in_string {
                    if self.escape {
                        self.escape = false;
                    } else if b == b'\\' {
                        self.escape = true;
                    } else if b == b'"' {
                        self.in_string = false;
                    } else if self.depth == 1 && self.target.is_none() {
                        self.string.push(b);
                    }
                    continue;
                }
                match b {
                    b'"' => {
                        self.in_string = true;
                        if self.depth == 1 && self.target.is_none() {
                            self.string.clear();
                        }
                        if element.is_none() && Some(self.depth) == self.target {
                            element = Some((self.line, vec![b], false));
                        }
                    }
                    b':' if self.depth == 1 && self.target.is_none() => {
                        self.last_key = std::mem::take(&mut self.string);
                    }
                    b'{' | b'[' => {
                        if self.depth == 0 && self.target.is_none() {
                            match (self.key, b) {
                                (None, b'[') => self.target = Some(1),
                                (Some(_), b'{') => {}
                                _ => {
                                    error = Some(match self.key {
                                        Some(_) => "a realm export is a JSON object",
                                        None => "the file is not a JSON array",
                                    });
                                    break;
                                }
                            }
                        } else if self.depth == 1
                            && self.target.is_none()
                            && b == b'['
                            && self.key.is_some_and(|k| self.last_key == k.as_bytes())
                        {
                            self.target = Some(2);
                        } else if element.is_none() && Some(self.depth) == self.target {
                            element = Some((self.line, vec![b], false));
                        }
                        self.depth += 1;
                    }
                    b'}' | b']' => {
                        if Some(self.depth) == self.target && b == b']' {
                            // The target array closes: anything after it is
                            // not ours to read.
                            self.finished = true;
                            if let Some((line, mut bytes, too_large)) = element.take() {
                                bytes.pop();
                                result = Some(finish(line, bytes, too_large));
                            }
                            break;
                        }
                        self.depth = self.depth.saturating_sub(1);
                        if Some(self.depth) == self.target
                            && let Some((line, bytes, too_large)) = element.take()
                        {
                            result = Some(finish(line, bytes, too_large));
                            break;
                        }
                    }
                    b',' if Some(self.depth) == self.target => {
                        if let Some((line, mut bytes, too_large)) = element.take() {
                            bytes.pop();
                            result = Some(finish(line, bytes, too_large));
                            break;
                        }
                    }
                    b if b.is_ascii_whitespace() => {}
                    _ => {
                        if element.is_none() && Some(self.depth) == self.target {
                            element = Some((self.line, vec![b], false));
                        }
                    }
                }
            }
            self.reader.consume(used);
            if let Some(e) = error {
                return self.fail(e);
            }
            if let Some(r) = result {
                return Some(r);
            }
            if self.finished {
                return None;
            }
        }
    }
}

fn finish(line: u64, bytes: Vec<u8>, too_large: bool) -> Result<(u64, Vec<u8>), Rejected> {
    if too_large {
        Err(rejected(line, None, "record larger than 1 MiB"))
    } else {
        Ok((line, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(text: &str, key: Option<&'static str>) -> Vec<Result<(u64, String), String>> {
        JsonElements::new(
            Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
            key,
        )
        .map(|r| {
            r.map(|(l, b)| (l, String::from_utf8(b).unwrap().trim().to_string()))
                .map_err(|e| format!("{}:{}", e.line.unwrap(), e.reason))
        })
        .collect()
    }

    #[test]
    fn splits_a_top_level_array_with_line_numbers() {
        let got = elements(
            "[\n {\"a\": \"x]}\"},\n {\"b\": [1, {\"c\": 2}]}\n]\n",
            None,
        );
        assert_eq!(
            got,
            [
                Ok((2, r#"{"a": "x]}"}"#.to_string())),
                Ok((3, r#"{"b": [1, {"c": 2}]}"#.to_string()))
            ]
        );
        assert!(elements("[]", None).is_empty());
    }

    #[test]
    fn finds_the_users_array_of_a_realm_export() {
        let got = elements(
            "{\"realm\": \"acme\", \"roles\": {\"users\": []},\n \"users\": [{\"id\": \"1\"}, {\"id\": \"2\"}], \"groups\": [{}]}",
            Some("users"),
        );
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1], Ok((2, r#"{"id": "2"}"#.to_string())));
        assert_eq!(elements("{\"realm\": \"x\"}", Some("users")).len(), 1);
    }

    #[test]
    fn a_truncated_file_is_reported_not_lost() {
        let got = elements("[{\"a\": 1},\n{\"b\": ", None);
        assert_eq!(got[0], Ok((1, r#"{"a": 1}"#.to_string())));
        assert_eq!(
            got[1],
            Err("2:the file ends inside this record".to_string())
        );
    }

    #[test]
    fn long_lines_are_cut_and_reported() {
        let long = format!(
            "{{\"x\": \"{}\"}}\n{{\"y\": 1}}\n",
            "a".repeat(MAX_RECORD_BYTES)
        );
        let got: Vec<_> = Lines::new(Box::new(std::io::Cursor::new(long.into_bytes()))).collect();
        assert!(got[0].as_ref().is_err_and(|e| e.line == Some(1)));
        assert_eq!(got[1].as_ref().unwrap().0, 2);
    }

    #[test]
    fn format_names_are_the_ones_the_cli_and_the_job_params_use() {
        use clap::ValueEnum;
        for f in Format::value_variants() {
            assert_eq!(f.to_possible_value().unwrap().get_name(), f.name());
            assert_eq!(serde_json::json!(f), f.name());
        }
    }

    #[test]
    fn formats_are_detected_from_name_and_head() {
        assert_eq!(
            Format::detect("u.ndjson.gz", b""),
            Some(Format::Auth0Export)
        );
        assert_eq!(Format::detect("u.json", b" [{"), Some(Format::Auth0Bulk));
        assert_eq!(
            Format::detect("r.json", b"{\"realm\":"),
            Some(Format::Keycloak)
        );
        assert_eq!(
            Format::detect("c.csv", b"name,cognito:username,sub\n"),
            Some(Format::CognitoCsv)
        );
        assert_eq!(
            Format::detect("o.csv", b"id,login,firstName\n"),
            Some(Format::OktaCsv)
        );
    }
}
