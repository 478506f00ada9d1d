//! The `linesight` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use linesight::cli::model::Outcome;
use linesight::logging::{self, LogFormat};
use linesight::{app, config, service, EXIT_CONFIG, EXIT_MODEL};

#[derive(Parser)]
#[command(
    name = "linesight",
    version,
    about = "Industrial edge controller: camera -> ONNX Runtime -> verdict -> Modbus reject -> MQTT"
)]
struct Cli {
    /// Log format: `auto` (coloured on a terminal, plain under systemd), `text`, or `json` for log shippers.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// The node's config file.
        #[arg(long, short, default_value = "/etc/linesight/linesight.yaml")]
        config: PathBuf,
    },
    /// Check a config file and report every problem as FILE:LINE:COL; exits 78 when invalid.
    CheckConfig {
        /// The config file to check.
        file: PathBuf,
    },
    /// Print the JSON Schema of the config file.
    ConfigSchema,
    /// A simulated line with the committed model, a simulated PLC and a local broker.
    Demo(linesight::cli::demo::DemoArgs),
    /// Measure each stage alone and the whole pipeline on this machine.
    // Boxed: the bench's many flags would make every other command as large.
    Bench(Box<linesight::cli::bench::BenchArgs>),
    /// Run a model on image files: verdict, detections or class scores; exits 1 if an image could not be read.
    Infer(linesight::cli::infer::InferArgs),
    /// Measure a model on a labelled folder: NG recall, false-reject rate, the threshold for a target recall.
    Eval(linesight::cli::eval::EvalArgs),
    /// Evidence capture: `capture export` writes captured parts as imagefolder, yolo, anomalib or label-studio.
    Capture(linesight::cli::capture::CaptureArgs),
    /// Signed model packages: keygen, pack, sign, verify (docs/rollout.md).
    Model(linesight::cli::model::ModelArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout with 0, as clap does.
        Err(e) if !e.use_stderr() => e.exit(),
        // `linesight model ...` answers a wrong argument with 78 like its other usage errors
        // (a script tells "refused" (1) from "asked wrongly" (78)); other commands keep clap's 2.
        Err(e) if subcommand_is("model") => {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG as u8);
        }
        Err(e) => e.exit(),
    };
    logging::init(cli.log_format);
    match cli.command {
        Command::CheckConfig { file } => match config::load_file(&file) {
            Ok(loaded) => {
                let c = loaded.config();
                println!(
                    "{}: valid ({} task(s), {} camera(s), {} model(s), {} output(s))",
                    file.display(),
                    c.tasks.len(),
                    c.cameras.len(),
                    c.models.len(),
                    c.modbus.outputs.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{}: {} problem(s); nothing was started", file.display(), errors.0.len());
                ExitCode::from(EXIT_CONFIG as u8)
            }
        },
        Command::ConfigSchema => {
            print!("{}", config::json_schema());
            ExitCode::SUCCESS
        }
        Command::Run { config } => run(config),
        Command::Demo(args) => with_runtime(|| linesight::cli::demo::main(args)),
        Command::Bench(args) => with_runtime(|| linesight::cli::bench::main(*args)),
        Command::Eval(args) => {
            let json = args.json;
            match linesight::cli::eval::main(args) {
                Ok(report) => {
                    if json {
                        println!("{report}");
                    } else {
                        linesight::cli::eval::print_text(&report);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(66)
                }
            }
        }
        Command::Capture(args) => match linesight::cli::capture::main(args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Model(args) => match linesight::cli::model::main(args) {
            Outcome::Done => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::FAILURE,
            Outcome::BadArguments => ExitCode::from(EXIT_CONFIG as u8),
        },
        Command::Infer(args) => match linesight::cli::infer::main(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(66)
            }
        },
    }
}

/// Whether the command line's subcommand is `name` (the first argument that is neither an option
/// nor the value of `--log-format`, the one global option that takes a value).
fn subcommand_is(name: &str) -> bool {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--log-format" {
            args.next();
        } else if !a.starts_with('-') {
            return a == name;
        }
    }
    false
}

/// The async runtime. Its threads are named (`rt-worker`) so that machine health can tell its
/// CPU apart from the capture and inference threads: telemetry, Modbus, the decision
/// controllers and gates, and the supervisor all run on these threads together.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(linesight::stats::machine::RUNTIME_THREAD_NAME)
        .build()
}

fn with_runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf) -> ExitCode {
    let loaded = match config::load_file(&path) {
        Ok(l) => l,
        Err(errors) => {
            tracing::error!("config rejected; outputs are not touched and nothing starts");
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        tracing::info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "linesight starting");
        // Before anything slow: a signal during a model's warm-up must not kill the process.
        let signals = match service::signals::Signals::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        let running = match app::start(&loaded, app::Options::default()).await {
            Ok(r) => r,
            Err(app::StartError::Model(e)) => {
                tracing::error!("{e}");
                return ExitCode::from(EXIT_MODEL as u8);
            }
            Err(app::StartError::Other(e)) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!("inspecting");
        let on_signal = Answers { reloader: running.reloader(), stats: running.stats.clone() };
        let stopped = running.run_until(signals.stop_requested(on_signal)).await;
        if stopped.outputs_safe {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        } else {
            // A failure exit: systemd restarts the service (`Restart=on-failure`), whose start
            // drives every output safe again, and the journal says which output and why.
            tracing::error!("stopped, but not every output was confirmed in its safe state");
            ExitCode::FAILURE
        }
    })
}

/// What the daemon does on SIGHUP and SIGUSR1.
struct Answers {
    reloader: app::reload::Reloader,
    stats: std::sync::Arc<linesight::stats::NodeStats>,
}

impl service::signals::OnSignal for Answers {
    /// Read the file again and apply it between two parts, or refuse it whole (see
    /// `app::reload`); the outcome is logged and published in the stats' `config` section.
    fn reload(&mut self) {
        let reloader = self.reloader.clone();
        tokio::spawn(async move {
            let _ = reloader.reload("SIGHUP").await;
        });
    }

    fn status(&mut self) {
        let doc = linesight::telemetry::json::stats_doc(&self.stats, false);
        tracing::info!(stats = %doc, "SIGUSR1: status");
    }
}
