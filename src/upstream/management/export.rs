//! Auth0's bulk users export, the source of a full Auth0 backfill: a job
//! is started (`POST jobs/users-exports` with the fields to export), polled
//! (`GET jobs/{id}`) until `completed`, and its file — gzipped NDJSON — is
//! downloaded from the pre-signed `location`, which lives only minutes
//! (Auth0 "Bulk User Exports"). The user search cannot page past 1,000
//! results, so it is no way to read every user.

use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Fatal, LinkExpired, MAX_ATTEMPTS, ManagementClient};

impl ManagementClient {
    /// Auth0: starts a users-export job of every field the mapping reads.
    pub async fn start_export(&self) -> anyhow::Result<String> {
        // Plus the dates, which the stored profile (the record, as Auth0
        // spells its claims) carries beside the mapped fields.
        let fields: Vec<Value> = self
            .mgmt
            .fields
            .source_fields()
            .into_iter()
            .chain(["created_at", "updated_at"])
            .map(|f| json!({"name": f}))
            .collect();
        let body = json!({"format": "json", "fields": fields});
        let (job, _) = self
            .call(
                Method::POST,
                self.url("jobs/users-exports")?,
                Some(&body),
                None,
            )
            .await?;
        job["id"]
            .as_str()
            .map(String::from)
            .context("the export job has no id")
    }

    /// Auth0: the export job's state, and its file's location once completed.
    pub async fn export_status(&self, job: &str) -> anyhow::Result<(String, Option<String>)> {
        let (body, _) = self
            .call(Method::GET, self.url(&format!("jobs/{job}"))?, None, None)
            .await?;
        Ok((
            body["status"].as_str().unwrap_or("unknown").to_string(),
            body["location"].as_str().map(String::from),
        ))
    }

    /// Auth0: waits for an export job to complete and returns its file's
    /// location; `None` when the job failed.
    pub async fn wait_for_export(
        &self,
        job: &str,
        poll: Duration,
    ) -> anyhow::Result<Option<String>> {
        loop {
            match self.export_status(job).await? {
                (status, Some(location)) if status == "completed" => return Ok(Some(location)),
                (status, _) if status == "failed" => return Ok(None),
                _ => tokio::time::sleep(poll).await,
            }
        }
    }

    /// The body of a download URL (Auth0's export file): no credentials are
    /// sent, the URL itself is the authorisation (a pre-signed URL), and
    /// it must not go through the Management API's bearer token.
    pub async fn download(&self, location: &str, into: &std::path::Path) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let url = url::Url::parse(location).context("the export location is not a URL")?;
        for attempt in 0..MAX_ATTEMPTS {
            let response = match self.http.get(url.clone()).send().await {
                Ok(r) if r.status().is_server_error() => None,
                Ok(r) => Some(r),
                Err(_) => None,
            };
            let Some(mut response) = response else {
                self.backoff(attempt).await;
                continue;
            };
            let status = response.status();
            if matches!(
                status,
                StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE
            ) {
                return Err(LinkExpired(status).into());
            }
            if !status.is_success() {
                return Err(Fatal(format!("downloading the export answered {status}")).into());
            }
            let mut file = tokio::fs::File::create(into).await?;
            while let Some(chunk) = response.chunk().await? {
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            return Ok(());
        }
        Err(Fatal("the export download kept failing".into()).into())
    }
}
