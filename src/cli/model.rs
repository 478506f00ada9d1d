//! `linesight model keygen|pack|sign|verify`: signed model packages (docs/rollout.md).
//!
//! `verify` runs [`rollout::verify::check`], the very checks a node runs before it installs a
//! package, and prints each one: what passes on the packing machine passes on the node (for the
//! same keys, kind, architecture and installed version).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};

use crate::config;
use crate::rollout::keys::{self, TrustedKey};
use crate::rollout::manifest::{self, Manifest, ARCHES};
use crate::rollout::pack::{self, PackOptions};
use crate::rollout::slots::Slots;
use crate::rollout::verify::{self, Expect};

#[derive(Args, Debug)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub command: ModelCommand,
}

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Make a signing key pair: KEY (secret, 0600; keep it off the nodes) and KEY.pub (for the nodes' config).
    Keygen {
        /// The secret key file to write; the public key goes to the same path plus `.pub`. Never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a signed package of a model, its sidecar and its golden images.
    Pack(Box<PackArgs>),
    /// Sign a package's manifest again (after editing it).
    Sign {
        /// The package folder.
        #[arg(long)]
        package: PathBuf,
        /// The secret key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Run the checks a node runs before installing a package; exits 0 if accepted, 1 if refused, 78 on bad arguments.
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub struct PackArgs {
    /// The ONNX model.
    #[arg(long)]
    pub model: PathBuf,
    /// Its sidecar. Default: MODEL.json when it exists.
    #[arg(long)]
    pub sidecar: Option<PathBuf>,
    /// The model's name in the nodes' config (`models:` entry) it is for.
    #[arg(long)]
    pub name: String,
    /// The package version: higher than any version of this model installed before.
    #[arg(long)]
    pub version: u64,
    /// classifier, yolo-detect, yolo-segment, yolo-classify or anomaly. Default: the sidecar's `kind`.
    #[arg(long)]
    pub kind: Option<String>,
    /// Execution providers it was checked with.
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    pub providers: Vec<String>,
    /// CPU architectures it may be installed on.
    #[arg(long, value_delimiter = ',', default_value = "x86_64,aarch64")]
    pub arch: Vec<String>,
    /// The oldest linesight that may run it. Default: this linesight's version.
    #[arg(long)]
    pub min_linesight: Option<String>,
    /// Refused after this time (RFC 3339, e.g. 2027-06-30T00:00:00Z).
    #[arg(long, conflicts_with = "valid_days")]
    pub expires: Option<String>,
    /// Refused this many days from now.
    #[arg(long)]
    pub valid_days: Option<u64>,
    /// A golden image and the verdict the model must give it on the node: IMAGE=OK or IMAGE=NG (repeatable).
    #[arg(long, value_name = "IMAGE=OK|NG")]
    pub golden: Vec<String>,
    /// Golden images from a labelled folder: DIR/good/* must be OK, any other subfolder's images NG.
    #[arg(long)]
    pub golden_dir: Option<PathBuf>,
    /// The secret key file to sign with.
    #[arg(long)]
    pub key: PathBuf,
    /// The package folder to write, or an existing folder to write NAME-VERSION.lsmodel in. Default: NAME-VERSION.lsmodel here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The package folder.
    #[arg(long)]
    pub package: PathBuf,
    /// A trusted public key file (repeatable): the package must be signed by one of them.
    #[arg(long = "key", required_unless_present = "config")]
    pub keys: Vec<PathBuf>,
    /// A node's config: decide as that node would, with its rollout.trusted_keys, the model
    /// entry's kind, and the highest version installed in its state directory (read only).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The model entry's name the package must be for. Default: the name in its manifest.
    #[arg(long)]
    pub name: Option<String>,
    /// The kind of the model entry it would replace.
    #[arg(long)]
    pub kind: Option<String>,
    /// The highest version of this model the node ever installed: the package must be newer.
    #[arg(long)]
    pub installed_version: Option<u64>,
    /// The architecture of the node. Default: this machine's.
    #[arg(long)]
    pub arch: Option<String>,
}

/// How a `model` subcommand ended; `main.rs` turns it into the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done; for `verify`: accepted (exit 0).
    Done,
    /// Failed; for `verify`: refused (exit 1).
    Failed,
    /// `verify` could not run as asked: a key file or an option is wrong (exit 78).
    BadArguments,
}

/// Run a `model` subcommand.
pub fn main(args: ModelArgs) -> Outcome {
    let result = match args.command {
        ModelCommand::Keygen { out } => keygen(&out),
        ModelCommand::Pack(a) => pack_cmd(*a),
        ModelCommand::Sign { package, key } => sign(&package, &key),
        ModelCommand::Verify(a) => return verify_cmd(&a),
    };
    match result {
        Ok(()) => Outcome::Done,
        Err(e) => {
            eprintln!("error: {e}");
            Outcome::Failed
        }
    }
}

fn keygen(out: &Path) -> Result<(), String> {
    let (key, public) = keys::keygen(out)?;
    println!("secret key: {} (mode 0600; keep it on the packing machine, never on a node)", out.display());
    println!("public key: {} (list it in each node's rollout.trusted_keys)", public.display());
    println!("key id:     {}", keys::key_id(&key.verifying_key()));
    Ok(())
}

fn pack_cmd(a: PackArgs) -> Result<(), String> {
    let key = keys::load_secret(&a.key)?;
    // The sidecar sits beside its model as `<model>.json` (what `linesight infer` reads too).
    let sidecar = a.sidecar.clone().or_else(|| {
        let mut s = a.model.as_os_str().to_owned();
        s.push(".json");
        Some(PathBuf::from(s)).filter(|p| p.is_file())
    });
    let mut golden = Vec::new();
    for g in &a.golden {
        let (image, verdict) =
            g.rsplit_once('=').ok_or_else(|| format!("--golden `{g}`: write IMAGE=OK or IMAGE=NG"))?;
        golden.push((PathBuf::from(image), verdict.to_ascii_uppercase()));
    }
    if let Some(dir) = &a.golden_dir {
        golden.extend(pack::golden_dir(dir)?);
    }
    let expires = match (a.expires.clone(), a.valid_days) {
        (Some(e), _) => Some(e),
        (None, Some(days)) => {
            Some(crate::util::time::rfc3339(SystemTime::now() + Duration::from_secs(days.saturating_mul(86_400))))
        }
        (None, None) => None,
    };
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from(pack::default_dir_name(&a.name, a.version)));
    let mut opts = PackOptions::new(a.model.clone(), &a.name, a.version, out);
    opts.sidecar = sidecar;
    opts.kind = a.kind.clone();
    opts.providers = a.providers.clone();
    opts.arch = a.arch.clone();
    if let Some(v) = &a.min_linesight {
        opts.min_linesight = v.clone();
    }
    opts.expires = expires;
    opts.golden = golden;
    let (dir, m) = pack::pack(&opts, &key)?;
    let ok = m.golden.iter().filter(|g| g.verdict == "OK").count();
    println!("packed {} version {} ({}) in {}", m.name, m.version, m.target.kind, dir.display());
    println!(
        "  {} files, {} golden images ({ok} OK, {} NG), signed by key {}",
        m.files.len(),
        m.golden.len(),
        m.golden.len() - ok,
        m.key_id
    );
    println!("  expires: {}", m.expires.as_deref().unwrap_or("never"));
    Ok(())
}

fn sign(package: &Path, key: &Path) -> Result<(), String> {
    let key = keys::load_secret(key)?;
    let m = pack::sign(package, &key)?;
    println!("signed {} ({} version {}) with key {}", package.display(), m.name, m.version, m.key_id);
    Ok(())
}

/// What a node's config says about installing a package for model `name`.
struct Node {
    trusted: Vec<TrustedKey>,
    kind: Option<String>,
    installed: Option<u64>,
}

fn node(path: &Path, name: &str) -> Result<Node, String> {
    let loaded = config::load_file(path).map_err(|e| format!("{e}\n{}: not a valid config", path.display()))?;
    let c = loaded.config();
    let model = c.models.get(name).ok_or_else(|| {
        let known: Vec<&str> = c.models.keys().map(String::as_str).collect();
        format!(
            "{} has no model `{name}` (it has: {}); a package installs over a model entry of the same name",
            path.display(),
            known.join(", ")
        )
    })?;
    let trusted = keys::trusted(&c.rollout)?;
    // The entry's kind, else what its sidecar declares (the daemon also reads the model file's
    // metadata; without either the kind is not checked here).
    let declared = model.kind.and_then(|k| serde_json::to_value(k).ok()).and_then(|v| v.as_str().map(str::to_string));
    let sidecar = model.sidecar.clone().unwrap_or_else(|| {
        let mut s = model.path.as_os_str().to_owned();
        s.push(".json");
        PathBuf::from(s)
    });
    let kind = declared.or_else(|| pack::kind_from_sidecar(&sidecar).ok().flatten());
    let installed = Slots::peek(&c.runtime.state_dir, name).and_then(|s| s.highest_installed());
    Ok(Node { trusted, kind, installed })
}

fn verify_cmd(a: &VerifyArgs) -> Outcome {
    let mut trusted = Vec::new();
    for path in &a.keys {
        match keys::load_public(path) {
            Ok(key) => {
                let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
                trusted.push(TrustedKey { name, key });
            }
            Err(e) => {
                eprintln!("error: --key {e}");
                return Outcome::BadArguments;
            }
        }
    }
    if let Some(kind) = a.kind.as_deref().filter(|k| !manifest::KINDS.contains(k)) {
        eprintln!("error: --kind `{kind}` is not one of {}", manifest::KINDS.join(", "));
        return Outcome::BadArguments;
    }
    if let Some(arch) = a.arch.as_deref().filter(|k| !ARCHES.contains(k)) {
        eprintln!("error: --arch `{arch}` is not one of {}", ARCHES.join(", "));
        return Outcome::BadArguments;
    }
    // Without --name the package is checked against its own name (a refused manifest is
    // reported by the checks themselves, so a name that cannot be read is left empty).
    let name = a.name.clone().unwrap_or_else(|| {
        manifest::read_bytes(&a.package).ok().and_then(|b| Manifest::parse(&b).ok()).map(|m| m.name).unwrap_or_default()
    });
    let (mut kind, mut installed) = (a.kind.clone(), a.installed_version);
    if let Some(path) = &a.config {
        match node(path, &name) {
            Ok(n) => {
                trusted.extend(n.trusted);
                kind = kind.or(n.kind);
                installed = installed.or(n.installed);
                println!(
                    "node {}: {} trusted key(s), model `{name}` of kind {}, highest installed version {}",
                    path.display(),
                    trusted.len(),
                    kind.as_deref().unwrap_or("unknown (not checked)"),
                    installed.map_or("none".into(), |v| v.to_string())
                );
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::BadArguments;
            }
        }
    }
    let expect = Expect {
        kind: kind.as_deref(),
        arch: a.arch.as_deref().unwrap_or(std::env::consts::ARCH),
        installed,
        now: SystemTime::now(),
    };
    println!("package {}", a.package.display());
    let result = verify::check_with(&a.package, &name, &trusted, &expect, &mut |check, detail| {
        println!("  ok       {check}: {detail}");
    });
    match result {
        Ok(v) => {
            println!(
                "accepted: {} version {}, signed by `{}` (manifest sha256 {})",
                v.manifest.name, v.manifest.version, v.key_name, v.manifest_sha256
            );
            Outcome::Done
        }
        Err(r) => {
            println!("  REFUSED  {}: {r}", r.code());
            println!("refused: {}", r.code());
            Outcome::Failed
        }
    }
}
