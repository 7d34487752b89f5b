//! Shadow comparisons and warm-ups: a version scored beside the served one without
//! alerting, started by an operator or by a retrained version warming up, and promoted by
//! hand or once warm.

use tracing::{info, warn};

use super::{Context, LifecycleError, Models};
use crate::detect::ShadowStats;
use crate::model::load_off_runtime;

impl Models {
    /// Starts scoring `version` beside the active version, without alerting.
    pub(super) async fn shadow(
        &mut self,
        ctx: &Context<'_>,
        model: &str,
        version: &str,
    ) -> Result<(), LifecycleError> {
        let Some(handle) = self.scorers.get(model) else {
            return Err(LifecycleError::NoActive(model.to_owned()));
        };
        let path = self.registry.path(model, version);
        let candidate = load_off_runtime(ctx.settings, model, path).await?;
        handle.shadow(Some(candidate)).await?;
        self.shadowing.insert(model.to_owned(), version.to_owned());
        ctx.event(
            serde_json::json!({ "event": "shadow_started", "model": model, "version": version }),
        )
        .await;
        Ok(())
    }

    /// Whether a retrained version of `model` warms up in shadow before it serves: when any of
    /// its streams is judged by calibrated probability, since activating it outright makes
    /// those streams learn again for `learn_windows` windows, unjudged (at one window per five
    /// minutes, longer than a day). A shadow an operator started is left alone; a warming
    /// one is replaced (the newer version warms from the start).
    pub(super) fn warms_in_shadow(&self, ctx: &Context<'_>, model: &str) -> bool {
        (!self.shadowing.contains_key(model) || self.warming.contains(model))
            && ctx.settings.streams.iter().any(|s| {
                s.model == model && matches!(s.judging, crate::detect::Judging::Probability(_))
            })
    }

    /// Marks `model`'s shadow `version` as warming, in memory and in the registry (`WARMING`),
    /// so a restart resumes the warm-up ([`Models::resume_warming`]).
    pub(super) fn start_warming(&mut self, model: &str, version: &str) {
        self.warming.insert(model.to_owned());
        if let Err(e) = crate::durable::on_disk(|| self.registry.set_warming(model, Some(version)))
        {
            warn!(model, version, error = %e, "Cannot record the warming version; a restart will not resume its warm-up.");
        }
    }

    /// `model` has no warming version any more (promoted, refused, or replaced by hand).
    pub(super) fn stop_warming(&mut self, model: &str) {
        if self.warming.remove(model)
            && let Err(e) = crate::durable::on_disk(|| self.registry.set_warming(model, None))
        {
            warn!(model, error = %e, "Cannot clear the warming record.");
        }
    }

    /// An operator's choice of another version (`activate`, `rollback`, the registry pointer
    /// moved by hand) ends a retrained version's warm-up: promoting it once warm would undo
    /// that choice. The version stays in the registry, to be activated by hand.
    pub(super) async fn end_warm_up(&mut self, ctx: &Context<'_>, model: &str) {
        if !self.warming.contains(model) {
            return;
        }
        if let Some(version) = self
            .stop_shadow(ctx, model, "another version activated by hand")
            .await
        {
            info!(model, version = %version, "Another version activated by hand: the retrained version's warm-up ends; it stays in the registry.");
        }
    }

    /// Ends `model`'s shadow, warming or not: the scorer stops scoring it (a no-op for one it
    /// dropped), its comparison goes, and `shadow_stopped` says why. Returns its version, if
    /// there was one.
    async fn stop_shadow(
        &mut self,
        ctx: &Context<'_>,
        model: &str,
        reason: &str,
    ) -> Option<String> {
        self.stop_warming(model);
        let version = self.shadowing.remove(model)?;
        if let Some(handle) = self.scorers.get(model)
            && let Err(e) = handle.shadow(None).await
        {
            warn!(model, error = %e, "Cannot stop the shadow.");
        }
        // Marked, not removed: the alerting stage drops the shadow's calibrations on seeing it
        // (a version activated by hand later learns afresh, as any activation does).
        ctx.shadows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(model.to_owned())
            .or_insert_with(|| ShadowStats {
                shadow: version.clone(),
                ..ShadowStats::default()
            })
            .ended = true;
        ctx.event(serde_json::json!({
            "event": "shadow_stopped", "model": model, "version": version, "reason": reason,
        }))
        .await;
        Some(version)
    }

    /// At start: a retrained version that was warming up in shadow when the daemon stopped
    /// warms up again (its calibrations start over; they were in memory), instead of waiting
    /// unserved for the next training run. A record that no longer applies (the version is
    /// active, gone, or no stream is judged by probability) is cleared.
    pub(crate) async fn resume_warming(&mut self, ctx: &Context<'_>) {
        let models: Vec<String> = self.scorers.keys().cloned().collect();
        for model in models {
            let version = match self.registry.warming(&model) {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    warn!(model = %model, error = %e, "Cannot read the warming record.");
                    continue;
                }
            };
            let applies = self.served.get(&model) != Some(&version)
                && self.registry.path(&model, &version).is_dir()
                && self.warms_in_shadow(ctx, &model);
            let resumed = if applies {
                self.shadow(ctx, &model, &version)
                    .await
                    .map_err(|e| e.to_string())
            } else {
                Err("no longer warming".to_owned())
            };
            match resumed {
                Ok(()) => {
                    self.warming.insert(model.clone());
                    info!(model = %model, version = %version, "Retrained version warms up in shadow again after the restart.");
                }
                Err(reason) => {
                    info!(model = %model, version = %version, reason = %reason, "Warming record cleared.");
                    if let Err(e) =
                        crate::durable::on_disk(|| self.registry.set_warming(&model, None))
                    {
                        warn!(model = %model, error = %e, "Cannot clear the warming record.");
                    }
                }
            }
        }
    }

    /// Ends each shadow whose scorer panicked (the scorer thread dropped it): the event
    /// `shadow_stopped` says so, and a warming one counts as a failed training run, retried.
    /// Before, a warming shadow that panicked never warmed, and every scheduled retraining was
    /// skipped behind it until a restart.
    async fn reap_lost_shadows(&mut self, ctx: &Context<'_>) {
        let lost: Vec<(String, String)> = self
            .scorers
            .iter()
            .filter_map(|(m, h)| h.take_lost_shadow().map(|v| (m.clone(), v)))
            .filter(|(m, v)| self.shadowing.get(m) == Some(v))
            .collect();
        for (model, version) in lost {
            warn!(model = %model, version = %version, "The shadow's scorer panicked; the shadow ends.");
            let warming = self.warming.contains(&model);
            self.stop_shadow(ctx, &model, "its scorer panicked").await;
            if warming {
                self.failed(
                    ctx,
                    &model,
                    format!("warming version {version} panicked in shadow"),
                )
                .await;
            }
        }
    }

    /// Promotes each warming shadow whose calibration has learnt every stream it has seen
    /// (the registry watch tick), after ending those whose scorer panicked. A refusal at the
    /// gate counts as a failed training run.
    pub(crate) async fn promote_warm(&mut self, ctx: &Context<'_>) {
        self.reap_lost_shadows(ctx).await;
        let warm: Vec<String> = {
            let shadows = ctx
                .shadows
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.warming
                .iter()
                .filter(|m| {
                    shadows
                        .get(*m)
                        .is_some_and(|s| s.warm() && Some(&s.shadow) == self.shadowing.get(*m))
                })
                .cloned()
                .collect()
        };
        for model in warm {
            self.stop_warming(&model);
            match self.promote(ctx, &model, "trained").await {
                Ok(()) => self.retain(ctx, &model).await,
                Err(reason) => {
                    self.failed(ctx, &model, format!("warmed version refused: {reason}"))
                        .await
                }
            }
        }
    }

    /// Publishes the shadow's and the active version's rates on the same windows, stops the
    /// shadow, and activates it through the gate.
    pub(super) async fn promote(
        &mut self,
        ctx: &Context<'_>,
        model: &str,
        reason: &str,
    ) -> Result<(), LifecycleError> {
        let Some(version) = self.shadowing.remove(model) else {
            return Err(LifecycleError::NoShadow(model.to_owned()));
        };
        let stats = ctx
            .shadows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(model)
            .unwrap_or_default();
        let mut report = stats.report();
        if let Some(r) = report.as_object_mut() {
            r.insert("event".into(), "shadow_report".into());
            r.insert("model".into(), model.into());
        }
        info!(model, version = %version, report = %report, "Shadow report before promotion.");
        ctx.event(report).await;
        if let Some(handle) = self.scorers.get(model) {
            handle.shadow(None).await?;
        }
        self.activate(ctx, model, &version, reason, false).await
    }
}
