//! `switchyard report dormant`: the users who would be locked out when the
//! upstream is switched off — state `pending`, known only from a backfill
//! or an import — with the upstream's last login where its record had one,
//! and whether the campaign invited them. Read by keyset pages and written
//! as they arrive, so a million users never sit in memory.

use std::io::Write;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

use crate::store::invitations::DormantUser;
use crate::store::{Database, UserState};

/// Users read per query.
const PAGE: u32 = 500;

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns, then the totals by state.
    #[default]
    Table,
    /// RFC 4180 CSV with a header row; no totals.
    Csv,
    /// One JSON object: `users` (an array), `listed`, and `totals` by state.
    Json,
}

/// Whether `--since` lists a user: their upstream last login is strictly
/// before it, or unknown (never logged in there, or a vendor whose
/// listing has none: Keycloak, Cognito).
fn within_since(since: Option<DateTime<Utc>>, last_login: Option<DateTime<Utc>>) -> bool {
    match (since, last_login) {
        (Some(since), Some(at)) => at < since,
        _ => true,
    }
}

/// `--since`: a date (midnight UTC) or an RFC 3339 time.
pub fn parse_since(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .with_context(|| format!("--since {text}: expected YYYY-MM-DD or an RFC 3339 time"))?;
    Ok(day
        .and_hms_opt(0, 0, 0)
        .context("midnight exists")?
        .and_utc())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn unix(t: i64) -> String {
    DateTime::from_timestamp(t, 0)
        .map(rfc3339)
        .unwrap_or_default()
}

/// One row of the report, its cells as text (empty when unknown).
struct Row {
    id: String,
    email: String,
    last_login: String,
    created: String,
    invited: String,
}

impl Row {
    fn of(user: &DormantUser, last_login: Option<DateTime<Utc>>) -> Self {
        Self {
            id: user.id.clone(),
            email: user.email.clone().unwrap_or_default(),
            last_login: last_login.map(rfc3339).unwrap_or_default(),
            created: unix(user.created_at),
            invited: user.invited_at.map(unix).unwrap_or_default(),
        }
    }

    fn json(&self) -> Value {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        json!({
            "id": self.id,
            "email": opt(&self.email),
            "upstream_last_login": opt(&self.last_login),
            "created_at": self.created,
            "invited_at": opt(&self.invited),
        })
    }
}

const HEADER: [&str; 5] = [
    "id",
    "email",
    "upstream_last_login",
    "created_at",
    "invited_at",
];

fn table_line(out: &mut dyn Write, cells: [&str; 5]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<40} {:<32} {:<20} {:<20} {}",
        cells[0], cells[1], cells[2], cells[3], cells[4]
    )
}

/// Where the rows go, in the chosen format.
enum Sink<'a> {
    Table(&'a mut dyn Write),
    Csv(Box<csv::Writer<&'a mut dyn Write>>),
    Json(&'a mut dyn Write),
}

impl Sink<'_> {
    fn header(&mut self) -> anyhow::Result<()> {
        match self {
            Sink::Table(out) => table_line(*out, HEADER)?,
            Sink::Csv(w) => w.write_record(HEADER)?,
            Sink::Json(out) => write!(out, "{{\"users\":[")?,
        }
        Ok(())
    }

    fn row(&mut self, row: &Row, first: bool) -> anyhow::Result<()> {
        let cells = [
            row.id.as_str(),
            &row.email,
            &row.last_login,
            &row.created,
            &row.invited,
        ];
        match self {
            Sink::Table(out) => table_line(*out, cells)?,
            Sink::Csv(w) => w.write_record(cells)?,
            Sink::Json(out) => {
                let sep = if first { "\n" } else { ",\n" };
                write!(out, "{sep}{}", row.json())?;
            }
        }
        Ok(())
    }
}

/// Writes the report to `out`; returns how many users it listed. With
/// `since`, only users whose upstream last login is before it, or unknown.
pub async fn dormant(
    db: &dyn Database,
    since: Option<DateTime<Utc>>,
    format: ReportFormat,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let mut sink = match format {
        ReportFormat::Table => Sink::Table(out),
        ReportFormat::Csv => Sink::Csv(Box::new(csv::Writer::from_writer(out))),
        ReportFormat::Json => Sink::Json(out),
    };
    sink.header()?;
    let mut listed = 0u64;
    let mut after: Option<String> = None;
    loop {
        let page = db.dormant_users(after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for user in &page {
            // The backfill keeps it in a column of its own (the listing's
            // `last_login` / `lastLogin`, left out of the stored claims).
            let last_login = user
                .upstream_last_login
                .and_then(|t| DateTime::from_timestamp(t, 0));
            if !within_since(since, last_login) {
                continue;
            }
            sink.row(&Row::of(user, last_login), listed == 0)?;
            listed += 1;
        }
    }
    let counts = db.user_counts(crate::store::now()).await?;
    let by_state = |s: UserState| counts.by_state.get(s.as_str()).copied().unwrap_or(0);
    match sink {
        Sink::Csv(mut w) => w.flush()?,
        Sink::Json(out) => {
            let mut totals = serde_json::Map::new();
            for s in UserState::ALL {
                totals.insert(s.as_str().into(), by_state(*s).into());
            }
            totals.insert("total".into(), counts.total.into());
            writeln!(
                out,
                "\n],\"listed\":{listed},\"totals\":{}}}",
                Value::Object(totals)
            )?;
            out.flush()?;
        }
        Sink::Table(out) => {
            writeln!(out)?;
            writeln!(out, "listed: {listed}")?;
            writeln!(out, "users by state:")?;
            for s in UserState::ALL {
                writeln!(out, "  {:<9} {}", s.as_str(), by_state(*s))?;
            }
            writeln!(out, "  {:<9} {}", "total", counts.total)?;
            out.flush()?;
        }
    }
    Ok(listed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_lists_a_last_login_strictly_before_it_or_none() {
        let since = parse_since("2024-03-01T12:00:00Z").unwrap();
        let at = |t: &str| Some(parse_since(t).unwrap());
        assert!(within_since(Some(since), at("2024-03-01T11:59:59Z")));
        assert!(!within_since(Some(since), at("2024-03-01T12:00:00Z")));
        assert!(!within_since(Some(since), at("2025-01-01")));
        assert!(within_since(Some(since), None));
        assert!(within_since(None, at("2025-01-01")));
    }

    #[test]
    fn since_is_a_date_at_midnight_utc_or_an_rfc3339_time() {
        assert_eq!(
            parse_since("2024-02-01").unwrap(),
            parse_since("2024-02-01T00:00:00Z").unwrap()
        );
        assert!(parse_since("2024-02-30").is_err());
        assert!(parse_since("last week").is_err());
    }
}
