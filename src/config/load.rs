//! Reading a config file: parse, deserialize section by section, resolve
//! paths, validate. Every problem is collected before anything is reported,
//! so an engineer fixes a file in one pass instead of one error per restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::diagnostic::{hint_for, suggest, Broken, Collector, ConfigErrors, Diagnostic};
use super::types::*;
use super::validate;
use super::yaml::{self, Node};

/// A config that parsed and validated, with relative paths resolved against
/// the folder of the file (so a unit file's working directory does not matter).
///
/// Its fields are private and only [`load_file`] makes one, so holding a
/// `LoadedConfig` is proof that every check ran and passed: code that indexes
/// maps by the names one entry gives another may rely on them.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    config: Config,
    file: PathBuf,
}

impl LoadedConfig {
    /// The validated config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The file it was read from, as it was given.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The config changed by `edit` (the demo points it at its simulated PLC and broker),
    /// checked again in full: an edit cannot smuggle in what the file could not say. The
    /// edited config goes through the same loader as its JSON text (JSON is YAML), so its
    /// problems are reported like a file's, against `<file> (edited)`.
    pub fn edited(&self, edit: impl FnOnce(&mut Config)) -> Result<LoadedConfig, ConfigErrors> {
        let mut config = self.config.clone();
        edit(&mut config);
        let name = format!("{} (edited)", self.file.display());
        let text = serde_json::to_string_pretty(&config).map_err(|e| {
            ConfigErrors(vec![Diagnostic {
                file: name.clone(),
                line: 1,
                col: 1,
                message: e.to_string(),
                hint: String::new(),
            }])
        })?;
        // Its paths were resolved when the file was loaded: resolve nothing again.
        let config = check_str(&text, &name, Path::new(""))?;
        Ok(LoadedConfig { config, file: self.file.clone() })
    }
}

/// Read, parse and validate a config file.
pub fn load_file(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![Diagnostic {
            file: shown.clone(),
            line: 1,
            col: 1,
            message: format!("cannot read the config file: {e}"),
            hint: "check the path and that the service user may read it".into(),
        }])
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&text, &shown, &base).map(|loaded| LoadedConfig { file: path.to_path_buf(), ..loaded })
}

/// Parse and validate config text. `file` is only used in messages (and as
/// [`LoadedConfig::file`]); relative paths inside are resolved against `base_dir`.
pub fn load_str(text: &str, file: &str, base_dir: &Path) -> Result<LoadedConfig, ConfigErrors> {
    check_str(text, file, base_dir).map(|config| LoadedConfig { config, file: PathBuf::from(file) })
}

fn check_str(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let root = yaml::parse(text).map_err(|e| {
        ConfigErrors(vec![Diagnostic {
            file: file.to_string(),
            line: e.mark.line,
            col: e.mark.col,
            message: format!("not valid YAML: {}", e.message),
            hint: "fix the syntax (indent with spaces, quote values that contain `: ` or `#`)".into(),
        }])
    })?;
    let mut c = Collector::new(file.to_string(), &root);
    let parsed = deserialize_sections(&root, &mut c);
    if let Some(mut config) = parsed.config {
        resolve_paths(&mut config, base_dir);
        validate::validate(&config, &parsed.broken, &mut c);
        if c.diags.is_empty() {
            return Ok(config);
        }
    }
    c.diags.sort_by_key(|d| (d.line, d.col));
    c.diags.dedup();
    Err(ConfigErrors(c.diags))
}

/// What deserializing the sections gave: the config if every required part
/// deserialized, and the names of the entries that did not (for [`validate`]).
struct Parsed {
    config: Option<Config>,
    broken: Broken,
}

fn deserialize_sections(root: &Node, c: &mut Collector) -> Parsed {
    let mut broken = Broken::default();
    if !matches!(root.value, yaml::Value::Map(_)) {
        c.at_mark(
            root.mark,
            format!("the config must be a mapping of sections, found {}", root.kind_name()),
            format!("start the file with the sections {}", TOP_LEVEL_KEYS.join(", ")),
        );
        return Parsed { config: None, broken };
    }
    for (k, _) in root.entries() {
        let key = k.as_str().unwrap_or_default();
        if !TOP_LEVEL_KEYS.contains(&key) {
            c.at_mark(k.mark, format!("unknown section `{key}`"), suggest(key, TOP_LEVEL_KEYS));
        }
    }
    let mut ok = true;
    let node = required(root, "node", c, &mut ok).and_then(|n| one::<NodeIdentity>(n, c));
    let mqtt = match root.get("mqtt") {
        Some(n) if !is_null(n) => one::<MqttConfig>(n, c).map(Some),
        _ => Some(None),
    };
    let mut modbus = ModbusConfig::default();
    if let Some(mb) = root.get("modbus").filter(|n| !is_null(n)) {
        check_keys(mb, MODBUS_KEYS, c);
        modbus.devices = named(mb.get("devices"), c, &mut broken.devices);
        modbus.points = named(mb.get("points"), c, &mut broken.points);
        modbus.outputs = named(mb.get("outputs"), c, &mut broken.outputs);
        modbus.result_blocks = named(mb.get("result_blocks"), c, &mut broken.result_blocks);
        if let Some(fw) = mb.get("fault_word").filter(|n| !is_null(n)) {
            modbus.fault_word = one::<FaultWordConfig>(fw, c);
        }
        if let Some(hb) = mb.get("heartbeat").filter(|n| !is_null(n)) {
            modbus.heartbeat = one::<HeartbeatConfig>(hb, c);
        }
    }
    let line = match root.get("line") {
        Some(n) if !is_null(n) => one::<LineConfig>(n, c),
        _ => Some(LineConfig::default()),
    };
    let stack_light = match root.get("stack_light") {
        Some(n) if !is_null(n) => one::<StackLightConfig>(n, c),
        _ => Some(StackLightConfig::default()),
    };
    let cameras = named(required(root, "cameras", c, &mut ok), c, &mut broken.cameras);
    let models = named(required(root, "models", c, &mut ok), c, &mut broken.models);
    let tasks = named(required(root, "tasks", c, &mut ok), c, &mut broken.tasks);
    let runtime = match root.get("runtime") {
        Some(n) if !is_null(n) => one::<RuntimeConfig>(n, c),
        _ => Some(RuntimeConfig::default()),
    };
    let http = match root.get("http") {
        Some(n) if !is_null(n) => one::<HttpConfig>(n, c).map(Some),
        _ => Some(None),
    };
    let health = match root.get("health") {
        Some(n) if !is_null(n) => one::<HealthConfig>(n, c),
        _ => Some(HealthConfig::default()),
    };
    let rollout = match root.get("rollout") {
        Some(n) if !is_null(n) => one::<RolloutConfig>(n, c),
        _ => Some(RolloutConfig::default()),
    };
    let config = match (node, mqtt, runtime, line, stack_light, http, health, rollout) {
        (
            Some(node),
            Some(mqtt),
            Some(runtime),
            Some(line),
            Some(stack_light),
            Some(http),
            Some(health),
            Some(rollout),
        ) if ok => Some(Config {
            node,
            mqtt,
            modbus,
            line,
            stack_light,
            cameras,
            models,
            tasks,
            runtime,
            http,
            health,
            rollout,
        }),
        _ => None,
    };
    Parsed { config, broken }
}

fn is_null(n: &Node) -> bool {
    n.is_null()
}

fn required<'n>(root: &'n Node, key: &str, c: &mut Collector, ok: &mut bool) -> Option<&'n Node> {
    let n = root.get(key);
    if n.is_none() {
        *ok = false;
        c.at_mark(
            root.mark,
            format!("missing section `{key}`"),
            format!("add a `{key}:` section (see firmware-config/README.md)"),
        );
    }
    n
}

fn check_keys(node: &Node, known: &[&str], c: &mut Collector) {
    for (k, _) in node.entries() {
        let key = k.as_str().unwrap_or_default();
        if !known.contains(&key) {
            c.at_mark(k.mark, format!("unknown key `{key}`"), suggest(key, known));
        }
    }
}

fn one<T: DeserializeOwned>(node: &Node, c: &mut Collector) -> Option<T> {
    match yaml::from_node::<T>(node) {
        Ok(v) => Some(v),
        Err(e) => {
            let hint = hint_for(&e.message);
            c.at_mark(e.mark, e.message, hint);
            None
        }
    }
}

/// Deserialize a map of named entries one entry at a time, so that errors in
/// several entries are all reported.
fn named<T: DeserializeOwned>(
    node: Option<&Node>,
    c: &mut Collector,
    broken: &mut BTreeSet<String>,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    let Some(node) = node else { return out };
    match &node.value {
        yaml::Value::Map(_) => {}
        _ if node.is_null() => return out,
        _ => {
            c.at_mark(
                node.mark,
                format!("expected a mapping of names to entries, found {}", node.kind_name()),
                "write one `name:` per entry, each followed by its settings indented below it",
            );
            return out;
        }
    }
    for (k, v) in node.entries() {
        let name = k.as_str().unwrap_or_default().to_string();
        if !valid_name(&name) {
            c.at_mark(
                k.mark,
                format!("`{name}` is not a valid name"),
                "use letters, digits, `-` and `_` only (names appear in MQTT topics)",
            );
        }
        match one::<T>(v, c) {
            Some(t) => {
                out.insert(name, t);
            }
            None => {
                broken.insert(name);
            }
        }
    }
    out
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

fn resolve_paths(config: &mut Config, base: &Path) {
    let fix = |p: &mut PathBuf| {
        if p.is_relative() && !p.as_os_str().is_empty() {
            *p = base.join(&*p);
        }
    };
    if let Some(m) = config.mqtt.as_mut() {
        if let Some(q) = m.queue.as_mut() {
            fix(&mut q.dir);
        }
        if let Some(tls) = m.tls.as_mut() {
            fix(&mut tls.ca);
            for p in [&mut tls.cert, &mut tls.key].into_iter().flatten() {
                fix(p);
            }
        }
        fix(&mut m.sparkplug.bdseq_file);
    }
    for cam in config.cameras.values_mut() {
        match &mut cam.source {
            SourceConfig::File(p) | SourceConfig::Directory(p) => fix(p),
            _ => {}
        }
    }
    for model in config.models.values_mut() {
        fix(&mut model.path);
        if let Some(p) = &mut model.sidecar {
            fix(p);
        }
        for prov in &mut model.providers {
            if let ProviderConfig::Tensorrt(t) = prov {
                if let Some(p) = &mut t.engine_cache {
                    fix(p);
                }
            }
        }
    }
    if let Some(p) = &mut config.runtime.onnxruntime {
        fix(p);
    }
    if let Some(h) = config.http.as_mut() {
        if let Some(p) = h.token_file.as_mut() {
            fix(p);
        }
        if let Some(t) = h.tls.as_mut() {
            fix(&mut t.cert);
            fix(&mut t.key);
        }
    }
    fix(&mut config.runtime.state_dir);
    for k in &mut config.rollout.trusted_keys {
        if let Some(p) = k.file.as_mut() {
            fix(p);
        }
    }
    if let Some(p) = config.rollout.incoming.as_mut() {
        fix(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_keys_match_the_schema() {
        let schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap();
        let props: BTreeSet<String> = schema["properties"].as_object().unwrap().keys().cloned().collect();
        let keys: BTreeSet<String> = TOP_LEVEL_KEYS.iter().map(|s| s.to_string()).collect();
        assert_eq!(props, keys);
    }
}
