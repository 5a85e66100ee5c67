//! What the jobs read from the upstream beyond single pages: Auth0's
//! export file, streamed, and the walk over every user that `verify` makes
//! without a job.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::files::{Lines, open};
use crate::store::jobs::Rejected;
use crate::store::position::ChunkPosition;
use crate::upstream::management::{Item, ManagementClient, Page, initial_positions};

/// An export file downloaded to a temporary path, removed when dropped
/// (read or not, and whatever stopped the reading).
pub struct ExportFile(std::path::PathBuf);

impl ExportFile {
    /// Downloads export job `job`'s file from its `location`.
    pub async fn download(
        client: &ManagementClient,
        job: &str,
        location: &str,
    ) -> anyhow::Result<Self> {
        let file = Self(
            std::env::temp_dir().join(format!("switchyard-{}-{job}.ndjson.gz", std::process::id())),
        );
        client.download(location, &file.0).await?;
        Ok(file)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ExportFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads a downloaded export file on a blocking thread, `batch` records
/// at a time after skipping `skip`.
pub fn stream_export(
    client: &Arc<ManagementClient>,
    path: &std::path::Path,
    skip: u64,
    batch: usize,
) -> anyhow::Result<(
    tokio::sync::mpsc::Receiver<Vec<Item>>,
    tokio::task::JoinHandle<()>,
)> {
    let reader = open(&path.to_string_lossy())?;
    let client = client.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Item>>(4);
    let reading = tokio::task::spawn_blocking(move || {
        let lines = Lines::new(reader).skip(skip as usize);
        let mut items = Vec::with_capacity(batch);
        for line in lines {
            items.push(line.and_then(|(n, bytes)| {
                let raw: Value = serde_json::from_slice(&bytes).map_err(|e| Rejected {
                    line: Some(n),
                    user_id: None,
                    reason: format!("malformed JSON in the export: {e}"),
                })?;
                client.record(&raw, Some(n))
            }));
            if items.len() == batch && tx.blocking_send(std::mem::take(&mut items)).is_err() {
                return;
            }
        }
        if !items.is_empty() {
            let _ = tx.blocking_send(items);
        }
    });
    Ok((rx, reading))
}

/// Every user the upstream lists, a page (or an export batch) at a
/// time, without a job: what `verify` reads.
pub async fn walk(
    client: &Arc<ManagementClient>,
    poll: Duration,
    mut each: impl FnMut(Vec<Item>),
) -> anyhow::Result<()> {
    let mut queue: VecDeque<ChunkPosition> = initial_positions(client.mgmt.paging, None).into();
    while let Some(mut at) = queue.pop_front() {
        if let ChunkPosition::Auth0Export { .. } = at {
            let job = client.start_export().await?;
            let location = client
                .wait_for_export(&job, poll)
                .await?
                .with_context(|| format!("the upstream's export job {job} failed"))?;
            let file = ExportFile::download(client, &job, &location).await?;
            let (mut rx, reading) = stream_export(client, file.path(), 0, 1000)?;
            while let Some(items) = rx.recv().await {
                each(items);
            }
            reading.await?;
            continue;
        }
        loop {
            let Page { items, next, split } = client.page(&at).await?;
            each(items);
            queue.extend(split);
            match next {
                Some(n) => at = n,
                None => break,
            }
        }
    }
    Ok(())
}
