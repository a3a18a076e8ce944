//! The one change path: [`Change::begin`] takes the change lock and opens a store transaction;
//! the caller validates and writes; a commit builds (and so validates) the whole new snapshot,
//! writes the audit record, commits and publishes. Dropping a change changes nothing.
//!
//! Every writer uses it: the admin API, reloads (and the start, a reload from nothing), sidecar
//! credential issuance and rotation, and the built-in CA's issuance.

use std::sync::Arc;

use tracing::info;

use super::Control;
use crate::snapshot::{Snapshot, SnapshotError};
use crate::store::{self, StoreError, StoreState, Tx};

/// Why a change was not applied. Nothing of it was.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

impl From<sqlx::Error> for ChangeError {
    fn from(e: sqlx::Error) -> Self {
        ChangeError::Store(e.into())
    }
}

/// One audit record: who did what to which object. Written in the change's transaction, and
/// logged (target `symbolon::audit`) once the change is committed.
#[derive(Clone, Debug)]
pub struct Audit {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    /// The serial of the certificate the CA issued, for an issuance (logged as its own field).
    pub serial: Option<String>,
}

impl Audit {
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            detail: detail.into(),
            serial: None,
        }
    }

    /// The audit entry of a certificate the CA issued.
    pub fn issued(mut self, serial: &str) -> Self {
        self.serial = Some(serial.to_string());
        self
    }
}

/// A change in progress: the change lock and a store transaction.
pub struct Change<'a> {
    _guard: tokio::sync::MutexGuard<'a, ()>,
    pub tx: Tx,
    control: &'a Control,
    audits: Vec<Audit>,
}

impl<'a> Change<'a> {
    pub async fn begin(control: &'a Control) -> Result<Self, StoreError> {
        let guard = control.change_lock.lock().await;
        let tx = control.store.begin().await?;
        Ok(Self {
            _guard: guard,
            tx,
            control,
            audits: Vec::new(),
        })
    }

    /// The control plane this change applies to.
    pub fn control(&self) -> &'a Control {
        self.control
    }

    /// Everything in the store as this change sees it, private keys opened.
    pub async fn current(&mut self) -> Result<StoreState, StoreError> {
        let mut st = store::load_all(&mut self.tx).await?;
        store::open_keys(&mut st, self.control.store.sealer())?;
        Ok(st)
    }

    /// Writes an audit record in the transaction (a change may write several).
    pub async fn audit(&mut self, audit: Audit) -> Result<(), StoreError> {
        store::insert_audit(
            &mut self.tx,
            &audit.actor,
            &audit.action,
            &audit.target,
            &audit.detail,
        )
        .await?;
        self.audits.push(audit);
        Ok(())
    }

    /// Builds the snapshot of the store as this change leaves it, from the files as last
    /// applied. Nothing is written or published.
    pub async fn build(&mut self) -> Result<Snapshot, ChangeError> {
        let state = store::load_all(&mut self.tx).await?;
        Ok(self.control.build(state)?)
    }

    /// Validates the whole new snapshot, writes `audit`, commits and publishes. No network
    /// here: CRL URLs a change attaches were fetched before it began.
    pub async fn commit(mut self, audit: Audit) -> Result<Arc<Snapshot>, ChangeError> {
        let snapshot = self.build().await?;
        self.audit(audit).await?;
        self.commit_built(snapshot, || {}).await
    }

    /// Commits a change the data plane does not read (the CA's issuance records): no new
    /// snapshot, so open connections are not checked again.
    pub async fn commit_records(mut self, audit: Option<Audit>) -> Result<(), ChangeError> {
        if let Some(a) = audit {
            self.audit(a).await?;
        }
        let Change {
            _guard, tx, audits, ..
        } = self;
        tx.commit().await.map_err(StoreError::from)?;
        log(&audits);
        Ok(())
    }

    /// Commits with `snapshot` (built by the caller from a new configuration: a reload).
    pub(super) async fn commit_built(
        self,
        snapshot: Snapshot,
        before_publish: impl FnOnce(),
    ) -> Result<Arc<Snapshot>, ChangeError> {
        let Change {
            _guard,
            tx,
            control,
            audits,
        } = self;
        tx.commit().await.map_err(StoreError::from)?;
        before_publish();
        let published = control.publish(snapshot);
        log(&audits);
        Ok(published)
    }
}

/// The audit log lines of committed records.
pub(super) fn log(audits: &[Audit]) {
    for a in audits {
        match &a.serial {
            Some(serial) => {
                info!(target: "symbolon::audit", actor = %a.actor, action = %a.action, object = %a.target, serial = %serial, detail = %a.detail, "certificate issued")
            }
            None => {
                info!(target: "symbolon::audit", actor = %a.actor, action = %a.action, object = %a.target, detail = %a.detail, "change applied")
            }
        }
    }
}
