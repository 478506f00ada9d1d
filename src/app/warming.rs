//! A model's warm-up as the plant sees it: tasks `warming` (retained on
//! MQTT, systemd status) while the model loads and runs its first inference,
//! then `inspecting` or `failed`.

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::inference::runtime;
use crate::service::notify;
use crate::telemetry::Telemetry;
use crate::util::time::rfc3339;

/// The tasks whose model is loading: `warming` on MQTT (retained) and in
/// systemd's status, with the start timeout extended while it lasts, because
/// the first TensorRT engine build for a model can take many minutes on a
/// Jetson and systemd would otherwise kill a start that is only slow. READY
/// comes after every model has warmed up.
pub struct Warming {
    telemetry: Telemetry,
    tasks: Vec<String>,
    started: Instant,
    extender: tokio::task::JoinHandle<()>,
}

impl Warming {
    pub fn begin(telemetry: &Telemetry, tasks: &[String], model: &crate::config::ModelConfig) -> Self {
        let providers: Vec<&str> = model.providers.iter().map(runtime::provider_name).collect();
        tracing::info!(?tasks, model = %model.path.display(), ?providers, "warming: loading the model (a TensorRT engine build can take minutes)");
        for task in tasks {
            telemetry.task_state(
                task,
                &json!({"state": "warming", "since": rfc3339(SystemTime::now()),
                        "model": model.path.display().to_string(), "providers": providers}),
            );
        }
        notify::notify(&format!("STATUS=warming: task {} loads model {}", tasks.join(", "), model.path.display()));
        let extender = tokio::spawn(async {
            loop {
                notify::notify("EXTEND_TIMEOUT_USEC=60000000");
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
        });
        Warming { telemetry: telemetry.clone(), tasks: tasks.to_vec(), started: Instant::now(), extender }
    }

    pub fn failed(self, why: &str) {
        for task in &self.tasks {
            self.telemetry
                .task_state(task, &json!({"state": "failed", "since": rfc3339(SystemTime::now()), "error": why}));
        }
    }

    pub fn done(self, provider: &str, warm_up_ms: f64) {
        let took = self.started.elapsed().as_secs_f64();
        tracing::info!(tasks = ?self.tasks, provider, seconds = %format!("{took:.1}"), "warmed up");
        for task in &self.tasks {
            self.telemetry.task_state(
                task,
                &json!({"state": "inspecting", "since": rfc3339(SystemTime::now()),
                        "provider": provider, "warming_s": (took * 10.0).round() / 10.0, "warm_up_ms": (warm_up_ms * 10.0).round() / 10.0}),
            );
        }
    }
}

impl Drop for Warming {
    fn drop(&mut self) {
        self.extender.abort();
    }
}
