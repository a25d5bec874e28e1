//! Decoding the `[autoscale]` table and each stage's `autoscale` (a `[stages.autoscale]`
//! table, or `false`). As for the rest of the file, a value of the wrong type becomes an
//! invalid one the validator rejects, shown as written; what a spec cannot hold (an unknown
//! setting, a stage's `autoscale` that is neither a table nor a boolean) is reported here.

use super::Decoding;
use crate::autoscale::{AutoscaleOverride, AutoscaleSpec, StageAutoscale};
use crate::check::{stage_field, Problem};

/// The settings a table may hold, for the message about any other key.
const KNOWN: &str = "low, high, min_tasks, max_tasks, cooldown_s or scale_down_grace_s";

impl Decoding {
    /// A number, NaN for anything else (shown as written).
    fn number(&mut self, field: String, v: &toml::Value) -> f64 {
        v.as_float()
            .or_else(|| v.as_integer().map(|i| i as f64))
            .unwrap_or_else(|| {
                self.written.insert(field, v.to_string());
                f64::NAN
            })
    }

    /// A table of settings under `prefix` (`autoscale.` or `stages[N].autoscale.`), or `None`
    /// when `v` is not a table (reported under `name`).
    fn settings(&mut self, name: &str, v: &toml::Value) -> Option<AutoscaleOverride> {
        let Some(table) = v.as_table() else {
            self.problems.push(Problem::new(
                name,
                v,
                "must be a table of autoscale settings ([autoscale] with low and high)",
            ));
            return None;
        };
        let mut o = AutoscaleOverride::default();
        for (key, v) in table {
            let field = format!("{name}.{key}");
            match key.as_str() {
                "low" => o.low = Some(self.number(field, v)),
                "high" => o.high = Some(self.number(field, v)),
                "min_tasks" => o.min_tasks = self.count(&field, Some(v)),
                "max_tasks" => o.max_tasks = self.count(&field, Some(v)),
                "cooldown_s" => o.cooldown_s = self.seconds(&field, Some(v)),
                "scale_down_grace_s" => o.scale_down_grace_s = self.seconds(&field, Some(v)),
                _ => self.problems.push(Problem::new(
                    field,
                    v,
                    format!("unknown autoscale setting; use {KNOWN}"),
                )),
            }
        }
        Some(o)
    }

    /// The job's `[autoscale]` table. A missing watermark becomes NaN shown as `(missing)`, so
    /// the validator names it and the stages still inherit the rest.
    pub(super) fn job_autoscale(&mut self, v: &toml::Value) -> Option<AutoscaleSpec> {
        let o = self.settings("autoscale", v)?;
        let mut watermark = |name: &str, v: Option<f64>| {
            v.unwrap_or_else(|| {
                self.written
                    .insert(format!("autoscale.{name}"), "(missing)".into());
                f64::NAN
            })
        };
        Some(AutoscaleSpec {
            low: watermark("low", o.low),
            high: watermark("high", o.high),
            min_tasks: o.min_tasks,
            max_tasks: o.max_tasks,
            cooldown_s: o.cooldown_s,
            scale_down_grace_s: o.scale_down_grace_s,
        })
    }

    /// Stage `i`'s `autoscale`: absent or `true` inherits the job's table (which must then
    /// exist), `false` opts out, a table overrides.
    pub(super) fn stage_autoscale(
        &mut self,
        i: usize,
        v: Option<&toml::Value>,
        job_has_table: bool,
    ) -> StageAutoscale {
        let name = stage_field(i, "autoscale");
        match v {
            None => StageAutoscale::Inherit,
            Some(toml::Value::Boolean(false)) => StageAutoscale::Off,
            Some(toml::Value::Boolean(true)) => {
                if !job_has_table {
                    self.problems.push(Problem::new(
                        name,
                        true,
                        "turns on the job's autoscale settings, but the job has no [autoscale] \
                         table: add one, or give this stage its own [stages.autoscale] table \
                         with low and high",
                    ));
                }
                StageAutoscale::Inherit
            }
            Some(v @ toml::Value::Table(_)) => self
                .settings(&name, v)
                .map_or(StageAutoscale::Off, StageAutoscale::Override),
            Some(v) => {
                self.problems.push(Problem::new(
                    name,
                    v,
                    "must be false (this stage never rescales) or a [stages.autoscale] table \
                     of settings",
                ));
                StageAutoscale::Off
            }
        }
    }
}
