//! What the housekeeping thread does for the data plane: save and restore the spend ledger,
//! delete logs past their retention.

use super::Gateway;

impl Gateway {
    /// Writes the spend so far to the store (the housekeeping thread, and at shutdown), so a
    /// restart keeps every window's spend.
    pub fn save_spend(&self) {
        // Shared spend lives in Redis, which keeps it.
        let Some(ledger) = self.spend.local() else { return };
        let snapshot = ledger.snapshot(self.clock.now_ms());
        if let Err(e) = self.settings.save_spend(&snapshot) {
            tracing::warn!(error = %e, "cannot record the spend so far");
        }
    }

    /// Deletes the logs past each gateway's retention (its `log_retention_days`, else the
    /// configured default; none: kept), in chunks; returns how many.
    pub fn expire_logs(&self) -> u64 {
        let now = i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX);
        let default = self.config().log_retention_days;
        let mut total = 0;
        // Cluster mode: PostgreSQL's daily partitions older than every gateway's retention.
        let mut longest = Some(0);
        for gw in self.settings.snapshot().gateways.values() {
            let days = gw.log_retention_days.unwrap_or(default);
            longest = longest.filter(|_| days > 0).map(|l: u64| l.max(days));
            if days == 0 {
                continue;
            }
            let before = now.saturating_sub(i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX));
            match self.settings.expire_logs(&gw.id, before, 5_000) {
                Ok(n) => total += n,
                Err(e) => tracing::warn!(gateway = %gw.id, error = %e, "cannot delete expired logs"),
            }
            if let Some(Err(e)) = self.settings.expire_cluster_logs(&gw.id, before) {
                tracing::warn!(gateway = %gw.id, error = %e, "cannot delete expired logs in PostgreSQL");
            }
        }
        if let Some(days) = longest.filter(|d| *d > 0) {
            let before = now.saturating_sub(i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX));
            if let Some(Err(e)) = self.settings.drop_cluster_log_days(before) {
                tracing::warn!(error = %e, "cannot drop expired log partitions in PostgreSQL");
            }
        }
        if total > 0 {
            tracing::info!(deleted = total, "expired logs deleted");
        }
        total
    }

    /// Reads the spend saved by the last run.
    pub fn restore_spend(&self) {
        match self.settings.load_spend() {
            Ok(saved) => {
                if let Some(ledger) = self.spend.local() {
                    ledger.restore(saved);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the saved spend; limits and budgets start from zero"),
        }
    }
}
