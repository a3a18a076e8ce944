//! The control plane's background work: CRL refreshes, sidecar rotations, quota use saved to
//! the store, and expiry checks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use super::Control;

/// Starts the control plane's loops; they stop when aborted (at shutdown).
pub(crate) fn spawn_tasks(
    control: &Arc<Control>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(flush_quotas_every(control.clone(), Duration::from_secs(2))),
        tokio::spawn(super::crl::refresh(control.clone())),
        tokio::spawn(super::credentials::rotate_when_due(
            control.clone(),
            shutdown,
        )),
        tokio::spawn(watch_expiry(control.clone(), Duration::from_secs(60))),
    ]
}

/// Saves quota use to the store, so a restart does not hand out a fresh quota.
pub async fn flush_quotas(control: &Control) {
    let rows: Vec<(String, i64, i64)> = control
        .shared
        .authz
        .quota_rows()
        .into_iter()
        .map(|(id, q)| {
            (
                id,
                q.window_start,
                i64::try_from(q.used).unwrap_or(i64::MAX),
            )
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    if let Err(e) = control.store.save_quota_use(&rows).await {
        warn!(error = %e, "cannot save quota use; it will be retried");
        let ids: Vec<String> = rows.into_iter().map(|(id, _, _)| id).collect();
        control.shared.authz.remark_dirty(&ids);
    }
}

async fn flush_quotas_every(control: Arc<Control>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        flush_quotas(&control).await;
    }
}

/// Checks certificate expiry now and then every `every`: gauges and threshold warnings.
async fn watch_expiry(control: Arc<Control>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let snapshot = control.shared.snapshot();
        let now = crate::pki::unix_now();
        control
            .shared
            .expiry
            .check(&snapshot.known_certs, now, &snapshot.expiry_warnings);
        drop(snapshot);
        // Certificates the CA issued: gauges for the 100 that expire first (bounded labels).
        let Ok(mut issued) = control.store.issued().await else {
            continue;
        };
        let now_text = crate::pki::rfc3339(now);
        issued.retain(|r| r.not_after > now_text);
        issued.sort_by(|a, b| a.not_after.cmp(&b.not_after));
        for r in issued.iter().take(100) {
            if let Ok(t) = time::OffsetDateTime::parse(
                &r.not_after,
                &time::format_description::well_known::Rfc3339,
            ) {
                metrics::gauge!("symbolon_certificate_expiry_seconds", "kind" => "issued", "name" => r.via.clone(), "fingerprint" => r.fingerprint.clone())
                    .set((t.unix_timestamp() - now) as f64);
            }
        }
    }
}
