//! `linesight capture export`: a capture store (see [`crate::capture`]) in a layout training and
//! labelling tools read. The store's folder comes from `--capture`, else from the config's tasks.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::capture::export::{self, Filter, Format};
use crate::util::time::parse_rfc3339_ms;

#[derive(Args, Debug)]
pub struct CaptureArgs {
    #[command(subcommand)]
    pub command: CaptureCommand,
}

#[derive(Subcommand, Debug)]
pub enum CaptureCommand {
    /// Export captured parts as imagefolder, yolo, anomalib or label-studio; prints the count per label.
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The capture folder (`<dir>` of `capture.dir`, holding one folder per task).
    #[arg(long)]
    pub capture: Option<PathBuf>,
    /// The node's config: the capture folder of its tasks, when `--capture` is not given.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// imagefolder, yolo, anomalib or label-studio.
    #[arg(long)]
    pub format: String,
    /// Where to write (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Only this task.
    #[arg(long)]
    pub task: Option<String>,
    /// Only parts captured at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Only parts captured before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Only these verdicts, comma-separated: OK, NG, UNCERTAIN, ERROR.
    #[arg(long, value_delimiter = ',')]
    pub verdict: Vec<String>,
    /// Only parts judged by this model version.
    #[arg(long)]
    pub model_version: Option<String>,
    /// Only parts an operator marked (mark-part, or the operator page).
    #[arg(long)]
    pub marked_only: bool,
}

/// Run `capture <command>`; the counts per label, as printed.
pub fn main(args: CaptureArgs) -> Result<String, String> {
    match args.command {
        CaptureCommand::Export(a) => run_export(a),
    }
}

fn run_export(a: ExportArgs) -> Result<String, String> {
    let format = Format::parse(&a.format)?;
    let time = |flag: &str, v: &Option<String>| -> Result<Option<i64>, String> {
        v.as_ref()
            .map(|t| {
                parse_rfc3339_ms(t)
                    .ok_or_else(|| format!("--{flag} `{t}` is not an RFC 3339 time; write e.g. 2026-12-01T08:00:00Z"))
            })
            .transpose()
    };
    for v in &a.verdict {
        if !["OK", "NG", "UNCERTAIN", "ERROR"].contains(&v.to_ascii_uppercase().as_str()) {
            return Err(format!("--verdict `{v}` is not a verdict; use OK, NG, UNCERTAIN or ERROR"));
        }
    }
    let filter = Filter {
        task: a.task.clone(),
        since_ms: time("since", &a.since)?,
        until_ms: time("until", &a.until)?,
        verdicts: a.verdict.iter().map(|v| v.to_ascii_uppercase()).collect(),
        model_version: a.model_version.clone(),
        marked_only: a.marked_only,
    };
    let dirs = match (&a.capture, &a.config) {
        (Some(d), _) => vec![d.clone()],
        (None, Some(c)) => dirs_of(c, a.task.as_deref())?,
        (None, None) => {
            return Err("give the capture folder with --capture DIR, or the node's config with --config FILE".into())
        }
    };
    let mut total = std::collections::BTreeMap::new();
    for d in &dirs {
        for (label, n) in export::export(d, format, &filter, &a.out)? {
            *total.entry(label).or_insert(0) += n;
        }
    }
    let mut text = format!("exported to {} ({}):\n", a.out.display(), a.format);
    for (label, n) in &total {
        let note = if label == "unknown" { "  (ERROR parts without a review mark: left out)" } else { "" };
        text.push_str(&format!("  {label:<16} {n}{note}\n"));
    }
    if total.is_empty() {
        text.push_str("  no captured part matched\n");
    }
    Ok(text)
}

/// The capture folders the config's tasks write to (one per distinct `capture.dir`).
fn dirs_of(config: &Path, task: Option<&str>) -> Result<Vec<PathBuf>, String> {
    let loaded =
        crate::config::load_file(config).map_err(|e| format!("{}: the config is not valid:\n{e}", config.display()))?;
    let c = loaded.config();
    let mut dirs: Vec<PathBuf> = c
        .tasks
        .iter()
        .filter(|(n, _)| task.map_or(true, |t| t == n.as_str()))
        .filter_map(|(_, t)| t.capture.as_ref())
        .map(|cap| cap.dir.clone().unwrap_or_else(|| c.runtime.state_dir.join("capture")))
        .collect();
    dirs.sort();
    dirs.dedup();
    if dirs.is_empty() {
        return Err(format!(
            "{}: no task has `capture` configured; give the folder with --capture DIR",
            config.display()
        ));
    }
    Ok(dirs)
}
